"""Pool strings and listing on the shared data: text files (gzip), manifests (list fields, labels), folders."""

from __future__ import annotations

import pytest

from training.pools import PoolSpec, list_pool, parse_pool


def test_parse_round_trips_and_names_errors():
    spec = parse_pool("m30k=text:/x/train.en.gz?start=10&stop=20&step=2")
    assert spec == PoolSpec("m30k", "text", "/x/train.en.gz", start=10, stop=20, step=2)
    assert parse_pool(spec.to_string()) == spec
    for bad, says in [("text:/x", "NAME=MODALITY:PATH"), ("a=video:/x", "modality"), ("a=text:/x?bogus=1", "bogus"),
                      ("a=text:/x?stop=ten", "integers")]:
        with pytest.raises(ValueError, match=says):
            parse_pool(bad)


def test_gzip_text_slices(shared_data):
    pool = list_pool(parse_pool(f"en=text:{shared_data}/text/multi30k/train.en.gz?start=28000&stop=28010&step=5"))
    assert pool.ids == ["line28000", "line28005"]
    assert pool.load([0])[0] == pool.sources[0] and len(pool.sources[0]) > 5


def test_manifest_list_field_gives_one_item_per_caption(shared_data):
    pool = list_pool(parse_pool(f"coco=text:{shared_data}/coco-mini/captions.jsonl?field=captions"))
    assert len(pool) == 400 and pool.ids[:2] == ["row0.0", "row0.1"]


def test_manifest_media_paths_and_labels(shared_data):
    pool = list_pool(parse_pool(f"c=image:{shared_data}/cifar10-train-3k/manifest.jsonl?label=label&step=300"))
    assert len(pool) == 10 and sorted(set(pool.labels)) == sorted(pool.labels)
    image = pool.load([0])[0]
    assert image.size == (32, 32) and image.mode == "RGB"


def test_folder_of_audio(shared_data):
    pool = list_pool(parse_pool(f"farm=audio:{shared_data}/gcompris-farm"))
    assert len(pool) == 9 and pool.ids[0].endswith(".ogg")
    assert pool.load([0])[0].sample_rate > 0


def test_missing_path_and_bad_field(tmp_path, shared_data):
    with pytest.raises(FileNotFoundError):
        list_pool(parse_pool(f"x=text:{tmp_path}/nope.txt"))
    with pytest.raises(ValueError, match="no field"):
        list_pool(parse_pool(f"x=text:{shared_data}/coco-mini/captions.jsonl?field=caption"))


def test_folders_without_items_of_the_modality_are_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no images here\n")
    for folder in ("empty", "notes"):
        with pytest.raises(ValueError, match=rf"{folder} holds no image files \(looked for .jpg, .jpeg, .png"):
            list_pool(parse_pool(f"x=image:{tmp_path / folder}"))
    (tmp_path / "text.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match="leave none of its 2 items"):
        list_pool(parse_pool(f"x=text:{tmp_path / 'text.txt'}?start=5"))


def test_a_corrupt_image_is_named(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8), "red").save(tmp_path / "good.PNG")  # suffixes match in any case
    (tmp_path / "bad.png").write_bytes(b"not an image")
    pool = list_pool(parse_pool(f"x=image:{tmp_path}"))
    assert pool.ids == ["bad.png", "good.PNG"] and pool.load([1])[0].size == (8, 8)
    with pytest.raises(ValueError, match=r"pool 'x': cannot read .*bad\.png: not a decodable image"):
        pool.load([0, 1])


def test_text_pools_skip_blank_lines_and_read_upper_case_gzip(tmp_path):
    import gzip

    (tmp_path / "blanks.txt").write_text("a dog\n\n   \nthe cat\n")
    pool = list_pool(parse_pool(f"x=text:{tmp_path / 'blanks.txt'}"))
    assert pool.sources == ["a dog", "the cat"] and pool.ids == ["line0", "line3"]  # ids keep the line numbers
    with gzip.open(tmp_path / "x.TXT.GZ", "wt") as handle:
        handle.write("one\ntwo\n")
    assert list_pool(parse_pool(f"x=text:{tmp_path / 'x.TXT.GZ'}")).sources == ["one", "two"]
    (tmp_path / "only_blanks.txt").write_text("\n \n")
    with pytest.raises(ValueError, match="has no items"):
        list_pool(parse_pool(f"x=text:{tmp_path / 'only_blanks.txt'}"))
