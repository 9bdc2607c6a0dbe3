"""ONNX Runtime text encoders: a tiny randomly initialised BERT saved as a user's folder would be, exported
through the same code path, checked against PyTorch (chunked runs, padding on either side, the cache)."""

from __future__ import annotations

import itertools
import os
import time

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx", reason="the export writes through the onnx package")
transformers = pytest.importorskip("transformers")

from bonds.encoders import onnx_text  # noqa: E402

LENGTHS = (3, 9, 1, 14, 6, 6, 2, 12, 5, 8, 11, 4, 7, 13, 10, 3, 9, 2, 6)  # 19 texts: uneven chunks


def _save_tiny_bert(folder, seed: int) -> None:
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64)
    transformers.BertModel(config).eval().save_pretrained(folder)  # safetensors, like a downloaded folder


def _load(folder):
    return transformers.AutoModel.from_pretrained(folder, local_files_only=True).eval()


def _batch(lengths=LENGTHS, left: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    width = max(lengths) + 2  # two all-padding columns too: a padded batch wider than its longest text
    ids = np.zeros((len(lengths), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        cols = slice(width - n, width) if left else slice(0, n)
        ids[row, cols], mask[row, cols] = rng.integers(1, 120, n), 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def _torch_pooled(model, batch) -> np.ndarray:
    with torch.no_grad():
        hidden = model(**{k: torch.from_numpy(v) for k, v in batch.items()}).last_hidden_state.numpy()
    return onnx_text.mean_pool(hidden, batch["attention_mask"])


@pytest.fixture()
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("FREEBIND_CACHE_DIR", str(tmp_path / "cache"))
    _save_tiny_bert(tmp_path / "tiny-bert", seed=0)
    return tmp_path / "tiny-bert"


@pytest.mark.parametrize("left", [False, True], ids=["right-padded", "left-padded"])
def test_chunked_runs_match_pytorch(folder, left):
    model = onnx_text.load(folder, lambda: _load(folder), _batch(LENGTHS[:2]), threads=2)
    batch = _batch(left=left)
    expected = _torch_pooled(_load(folder), batch)
    got = model.pooled(batch)  # 19 texts: split by length into two chunks run side by side
    assert got.shape == (19, 32) and got.dtype == np.float32
    assert np.allclose(got, expected, atol=1e-5)
    single = onnx_text.OnnxTextModel(model.path, threads=1).pooled(batch)
    assert np.allclose(single, got, atol=1e-6)


def test_many_small_chunks_match_pytorch(folder, monkeypatch):
    monkeypatch.setattr(onnx_text, "CHUNK_TOKENS", 20)  # 19 texts in about ten chunks, two threads taking turns
    model = onnx_text.load(folder, lambda: _load(folder), _batch(LENGTHS[:2]), threads=2)
    batch = _batch()
    assert len(onnx_text.balanced_chunks(batch["attention_mask"].sum(1), 2, max_tokens=20)) > 4
    assert np.allclose(model.pooled(batch), _torch_pooled(_load(folder), batch), atol=1e-5)


def test_one_text_matches_its_row_in_a_batch(folder):
    model = onnx_text.load(folder, lambda: _load(folder), _batch(LENGTHS[:2]), threads=2)
    batch = _batch()
    alone = {name: values[[3], : LENGTHS[3]] for name, values in batch.items()}
    assert np.allclose(model.pooled(alone)[0], model.pooled(batch)[3], atol=1e-5)


def test_export_is_cached_and_keyed_on_the_weights(folder):
    loads = []

    def load_model():
        loads.append(1)
        return _load(folder)

    probe = _batch(LENGTHS[:2])
    first = onnx_text.load(folder, load_model, probe, threads=1)
    again = onnx_text.load(folder, load_model, probe, threads=2)
    assert len(loads) == 1 and again.path == first.path  # the second process-equivalent never loads PyTorch
    _save_tiny_bert(folder, seed=1)  # the user replaces the weights: the key, hence the file, changes
    retrained = onnx_text.load(folder, load_model, probe, threads=1)
    assert len(loads) == 2 and retrained.path != first.path
    assert onnx_text.weights_path(retrained.path).is_file()  # the weights sit beside the graph, mapped by ORT
    assert not first.path.exists() and not onnx_text.weights_path(first.path).exists()  # the old export went
    batch = _batch()
    assert np.allclose(retrained.pooled(batch), _torch_pooled(_load(folder), batch), atol=1e-5)


def test_an_export_that_disagrees_is_refused_and_leaves_nothing(folder, monkeypatch):
    monkeypatch.setattr(onnx_text, "PROBE_MIN_COSINE", 1.5)  # no graph can pass: the refusal path runs
    with pytest.raises(RuntimeError, match="disagrees with PyTorch"):
        onnx_text.load(folder, lambda: _load(folder), _batch(LENGTHS[:2]), threads=1)
    assert not any((onnx_text.cache_dir() / "onnx").iterdir())  # no partial or unchecked file left behind


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FREEBIND_CACHE_DIR", str(tmp_path / "explicit"))
    assert onnx_text.cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("FREEBIND_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert onnx_text.cache_dir() == tmp_path / "xdg" / "freebind"


@pytest.mark.parametrize("chunks", [2, 3, 4])
def test_chunks_cover_every_row_once_and_even_out_padded_sizes(chunks):
    lengths = np.random.default_rng(chunks).integers(8, 40, 32)  # caption-like token counts
    parts = onnx_text.balanced_chunks(lengths, chunks)
    assert 1 <= len(parts) <= chunks
    assert sorted(np.concatenate(parts).tolist()) == list(range(32))

    def largest(groups):
        return max(len(g) * lengths[g].max() for g in groups)

    by_count = np.array_split(np.argsort(lengths), chunks)  # the naive split: equal rows per chunk
    assert largest(parts) <= largest(by_count)
    assert largest(parts) < 1.6 * lengths.sum() / chunks + lengths.max()  # near an even share of the tokens


@pytest.mark.parametrize("max_tokens", [48, 64, 128])
def test_a_token_cap_makes_more_chunks_longest_first_each_within_the_cap(max_tokens):
    lengths = np.random.default_rng(max_tokens).integers(8, 40, 128)
    parts = onnx_text.balanced_chunks(lengths, 2, max_tokens=max_tokens)
    assert sorted(np.concatenate(parts).tolist()) == list(range(128))
    assert len(parts) >= lengths.sum() / max_tokens  # no fewer groups than the cap allows
    assert all(len(group) * lengths[group].max() <= max_tokens for group in parts)
    for longer, shorter in itertools.pairwise(parts):  # similar lengths together, longest group first
        assert lengths[longer].min() >= lengths[shorter].max()
    below_longest = onnx_text.balanced_chunks(lengths, 2, max_tokens=7)  # every text is over the cap: each alone
    assert len(below_longest) == 128 and all(len(group) == 1 for group in below_longest)
    uncapped = onnx_text.balanced_chunks(lengths, 2, max_tokens=10**6)
    assert [g.tolist() for g in uncapped] == [g.tolist() for g in onnx_text.balanced_chunks(lengths, 2)]


def test_pruning_keeps_other_folders_and_running_exports(folder, tmp_path):
    """Only the same folder's older exports go, and partial files old enough that no export still writes them."""
    onnx_dir = onnx_text.cache_dir() / "onnx"
    onnx_dir.mkdir(parents=True)
    current = onnx_text.export_path(folder)
    same_name_elsewhere = onnx_text.export_path(tmp_path / "elsewhere" / folder.name)
    assert same_name_elsewhere.name != current.name and same_name_elsewhere.name.startswith(f"{folder.name}-")
    family = current.name.rsplit("-", 1)[0]
    older = onnx_dir / f"{family}-0123456789abcdef01234567.onnx"
    stale, fresh = onnx_dir / f"{older.name}.11.22.partial", onnx_dir / f"{current.name}.33.44.partial"
    for path in (current, same_name_elsewhere, older, stale, fresh):
        path.write_bytes(b"graph")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    removed = onnx_text.prune(current)
    assert sorted(removed) == sorted([older, stale])
    assert sorted(p.name for p in onnx_dir.iterdir()) == sorted(p.name for p in (current, same_name_elsewhere, fresh))
