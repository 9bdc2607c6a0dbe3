"""Evaluation metrics on hand-made cases, and the preset choice rule."""

from __future__ import annotations

import numpy as np
import pytest

from training.evaluate import load_tasks, retrieval_metrics, suggest_presets, zeroshot_metrics


def test_retrieval_recall_both_directions():
    g = np.eye(4, dtype=np.float32)
    q = g[[0, 1, 3, 2]]  # queries 2 and 3 point at each other's match
    m = retrieval_metrics(q, g)
    assert m["q2g_R@1"] == 50.0 and m["g2q_R@1"] == 50.0 and m["q2g_R@5"] == 100.0 and m["mean_R@1"] == 50.0
    with pytest.raises(ValueError, match="aligned"):
        retrieval_metrics(q[:3], g)


def test_zeroshot_top1():
    classes = np.eye(3, dtype=np.float32)
    x = np.array([[1, 0.1, 0], [0, 0, 1], [0.9, 1, 0]], dtype=np.float32)
    assert zeroshot_metrics(x, ["a", "c", "a"], classes, ["a", "b", "c"]) == {"top1": pytest.approx(66.67)}


def test_presets_keep_english_within_two_points():
    def task(group, values):
        return {"group": group, "bonded": {str(f): {"top1": v} for f, v in zip(factors, values, strict=True)}}

    factors = [0.0, 0.5, 1.0]
    report = {"factors": factors, "tasks": {"en": task("english", [90.0, 88.5, 70.0]),
                                            "de": task("multilingual", [20.0, 40.0, 60.0])}}
    assert suggest_presets(report) == {"english": 0.5, "multilingual": 1.0}
    # factors given in another order: the reference is still f = 0, not whichever came first
    order = [2, 1, 0]
    shuffled = {"factors": [factors[i] for i in order],
                "tasks": {n: {**t, "bonded": {str(factors[i]): t["bonded"][str(factors[i])] for i in order}}
                          for n, t in report["tasks"].items()}}
    assert suggest_presets(shuffled) == {"english": 0.5, "multilingual": 1.0}


def test_ties_count_against_the_match_and_nan_is_an_error():
    collapsed = np.ones((20, 4), dtype=np.float32)  # every item embedded the same: nothing is retrieved
    m = retrieval_metrics(collapsed, collapsed)
    assert m["q2g_R@1"] == m["g2q_R@1"] == m["q2g_R@10"] == 0.0
    assert retrieval_metrics(np.eye(4, dtype=np.float32), np.eye(4, dtype=np.float32))["mean_R@1"] == 100.0
    assert zeroshot_metrics(collapsed[:3], ["a", "a", "b"], collapsed[:2], ["a", "b"]) == {"top1": 0.0}
    broken = np.full((4, 4), np.nan, dtype=np.float32)
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(broken, np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        zeroshot_metrics(broken, ["a"] * 4, np.eye(2, 4, dtype=np.float32), ["a", "b"])


def test_task_files_integer_class_keys_and_conflicting_pools(tmp_path):
    path = tmp_path / "tasks.yaml"
    path.write_text("zeroshot:\n  - {name: z, items: 'zi=image:/x/manifest.jsonl?label=label', "
                    "classes: {0: red, 1: blue}, templates: ['a {c} thing']}\n")
    (task,) = load_tasks(path, tmp_path)
    assert task.classes == ["0", "1"]  # labels are read as strings, so the keys are too
    eye = np.eye(2, dtype=np.float32)
    assert zeroshot_metrics(eye, ["0", "1"], eye, task.classes)["top1"] == 100
    path.write_text("retrieval:\n"
                    "  - {name: r1, query: 'q=text:a.txt?stop=25', gallery: 'g=text:a.txt?start=25'}\n"
                    "  - {name: r2, query: 'q=text:b.txt?stop=25', gallery: 'g=text:a.txt?start=25'}\n")
    with pytest.raises(ValueError, match="pool name 'q' means 'q=text:a.txt.* in task 'r1' but 'q=text:b.txt.* 'r2'"):
        load_tasks(path, tmp_path)
    (tmp_path / "de.txt").write_text("ein Hund\neine Katze\n\nein Auto\n")  # a blank line the other file lacks
    (tmp_path / "en.txt").write_text("a dog\na cat\na car\na bus\n")
    path.write_text(f"retrieval:\n  - {{name: r, query: 'q=text:{tmp_path}/de.txt?stop=4', "
                    f"gallery: 'g=text:{tmp_path}/en.txt?stop=3'}}\n")
    with pytest.raises(ValueError, match="query line 3 would pair with gallery line 2"):
        load_tasks(path, tmp_path)
    for text, says in [("retrieval:\n  - {name: r, query: \"q=text:a.txt\n", "not valid YAML/JSON at line"),
                       ("zeroshot:\n  - {name: z, items: 'i=image:/x', classes: [red, blue]}\n", "classes must map"),
                       ("retrieval:\n  - {query: 'q=text:a.txt'}\n", "a retrieval task has no name, gallery"),
                       ("retrieval: {name: r}\n", "must be a list of tasks"),
                       ("tasks: []\n", "expected a mapping")]:
        path.write_text(text)
        with pytest.raises(ValueError, match=says):
            load_tasks(path, tmp_path)
