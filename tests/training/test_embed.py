"""Embedding shards: contents match the encoder, shards on disk are skipped, split work adds up, Ray."""

from __future__ import annotations

import numpy as np
import pytest

from bonds.encoders import create_encoder
from training.embed import SpaceSpec, embed_pools, embed_pools_ray, load_embeddings, parse_options, pool_folder
from training.pools import list_pool, parse_pool

TINY = SpaceSpec("tiny16", "tiny", {"dim": 16, "seed": 3})


@pytest.fixture()
def pools(shared_data):
    return [parse_pool(f"en=text:{shared_data}/text/multi30k/train.en.gz?stop=250"),
            parse_pool(f"cifar=image:{shared_data}/cifar10-train-3k/manifest.jsonl?step=100")]


def test_shards_hold_the_encoder_vectors_in_order(tmp_path, pools):
    written = embed_pools(tmp_path, TINY, pools, shard_size=100, batch_size=32, progress=False)
    assert written == {"en": 250, "cifar": 30}
    assert len(list(pool_folder(tmp_path, "tiny16", "en").glob("shard-*.safetensors"))) == 3
    ids, vectors = load_embeddings(tmp_path, "tiny16", "en")
    pool = list_pool(pools[0])
    assert ids == pool.ids
    expected = create_encoder("tiny", dim=16, seed=3).encode("text", pool.sources).vectors
    np.testing.assert_allclose(vectors, expected, atol=1e-6)


def test_written_shards_are_skipped(tmp_path, pools):
    embed_pools(tmp_path, TINY, pools[:1], shard_size=100, progress=False)
    first = pool_folder(tmp_path, "tiny16", "en") / "shard-00001.safetensors"
    first.unlink()  # as if the run had died while writing shard 1
    assert embed_pools(tmp_path, TINY, pools[:1], shard_size=100, progress=False) == {"en": 100}


def test_split_across_machines_equals_one_run(tmp_path, pools):
    one = tmp_path / "one"
    embed_pools(one, TINY, pools[:1], shard_size=60, progress=False)
    split = tmp_path / "split"
    counts = [embed_pools(split, TINY, pools[:1], shard_size=60, num_shards=2, shard_index=i, progress=False)["en"]
              for i in (0, 1)]
    assert counts == [130, 120]
    a, b = load_embeddings(one, "tiny16", "en"), load_embeddings(split, "tiny16", "en")
    assert a[0] == b[0] and np.array_equal(a[1], b[1])


def test_float16_and_modalities_the_space_lacks(tmp_path, pools):
    text_only = SpaceSpec("t", "tiny", {"dim": 8, "modalities": ["text"]})
    assert embed_pools(tmp_path, text_only, pools, dtype="float16", progress=False) == {"en": 250}
    _, vectors = load_embeddings(tmp_path, "t", "en")
    assert vectors.dtype == np.float32 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=2e-3)


def test_other_data_under_the_same_name_is_refused(tmp_path, pools, shared_data):
    embed_pools(tmp_path, TINY, pools[:1], progress=False)
    with pytest.raises(ValueError, match="holds pool"):
        embed_pools(tmp_path, TINY, [parse_pool(f"en=text:{shared_data}/text/multi30k/train.de.gz?stop=250")],
                    progress=False)
    with pytest.raises(ValueError, match="another space spec"):
        embed_pools(tmp_path, SpaceSpec("tiny16", "tiny", {"dim": 8}), pools[:1], progress=False)


def test_parse_options():
    assert parse_options(["dim=16", "role=query", 'modalities=["text"]']) == {
        "dim": 16, "role": "query", "modalities": ["text"]}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_options(["dim"])


@pytest.mark.slow
def test_ray_runner_writes_the_same_shards(tmp_path, pools):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        written = embed_pools_ray(tmp_path / "ray", TINY, pools, shard_size=100, batch_size=32)
    finally:
        ray.shutdown()
    assert written == {"en": 250, "cifar": 30}
    embed_pools(tmp_path / "local", TINY, pools, shard_size=100, progress=False)
    for name in ("en", "cifar"):
        a, b = load_embeddings(tmp_path / "ray", "tiny16", name), load_embeddings(tmp_path / "local", "tiny16", name)
        assert a[0] == b[0] and np.array_equal(a[1], b[1])


def test_a_missing_last_shard_or_other_shard_size_is_an_error(tmp_path, pools):
    embed_pools(tmp_path, TINY, pools[:1], shard_size=100, progress=False)
    folder = pool_folder(tmp_path, "tiny16", "en")
    for suffix in (".safetensors", ".json"):
        (folder / f"shard-00002{suffix}").unlink()  # the last shard never written: the pool would end at 200
    with pytest.raises(FileNotFoundError, match="has 250 items but its shards hold 200"):
        load_embeddings(tmp_path, "tiny16", "en")
    # the shards on disk are 100 items each: the missing one is cut the same way, whatever --shard-size says
    assert embed_pools(tmp_path, TINY, pools[:1], shard_size=60, progress=False) == {"en": 50}
    ids, vectors = load_embeddings(tmp_path, "tiny16", "en")
    assert ids == list_pool(pools[0]).ids and len(vectors) == 250


def test_unknown_encoder_options_and_sizes_are_errors(tmp_path, pools):
    with pytest.raises(ValueError, match="encoder 'tiny' does not take the options.*bogus"):
        embed_pools(tmp_path, SpaceSpec("x", "tiny", {"bogus": 1}), pools[:1], progress=False)
    with pytest.raises(ValueError, match="batch size must be >= 1"):
        embed_pools(tmp_path, TINY, pools[:1], batch_size=0, progress=False)
