"""ConSE pseudo-pairs: the classifier's top-k weights, the starter's image formula rebuilt from them, the
perturbed views, and image-centred pairs from classified photos."""

from __future__ import annotations

import numpy as np
import pytest

from training.conse import ViewConfig, classify_pool, conse, load_posteriors, one_hot, top_of, top_weights, views_of
from training.embed import SpaceSpec, embed_pools, load_embeddings
from training.pairs import PairsConfig, build_pairs, load_pairs
from training.pools import list_pool, parse_pool


def test_top_weights_keep_the_k_best_classes_renormalised():
    probs = np.array([[0.1, 0.5, 0.05, 0.35], [0.7, 0.1, 0.15, 0.05]])
    idx, w = top_weights(probs, 2)
    assert idx.tolist() == [[1, 3], [0, 2]]
    np.testing.assert_allclose(w, [[0.5 / 0.85, 0.35 / 0.85], [0.7 / 0.85, 0.15 / 0.85]], rtol=1e-6)


def test_the_stored_top_weights_cut_to_fewer_classes_are_that_topk_classified_afresh():
    """An encoder with `topk` 3 scored from posteriors stored at 10 mixes what classifying at 3 gives."""
    probs = np.random.default_rng(0).dirichlet(np.full(50, 0.3), size=6)
    stored = top_weights(probs, 10)
    for k in (1, 3, 10):
        idx, w = top_of(*stored, k)
        fresh = top_weights(probs, k)
        assert idx.tolist() == fresh[0].tolist()
        np.testing.assert_allclose(w, fresh[1], rtol=1e-6)
    with pytest.raises(ValueError, match="top 10 classes, so topk 11 cannot be scored"):
        top_of(*stored, 11)


def test_conse_is_the_normalised_weighted_sum_of_bank_rows():
    rng = np.random.default_rng(0)
    bank = rng.standard_normal((6, 4)).astype(np.float32)
    idx, w = np.array([[2, 5]]), np.array([[0.75, 0.25]], np.float32)
    mixed = 0.75 * bank[2] + 0.25 * bank[5]
    np.testing.assert_allclose(conse(idx, w, bank)[0], mixed / np.linalg.norm(mixed), rtol=1e-5)
    # a photo the classifier is sure of is its class's own (normalised) row
    sure = conse(*one_hot(6), bank)
    np.testing.assert_allclose(sure, bank / np.linalg.norm(bank, axis=1, keepdims=True), rtol=1e-5)


def test_views_are_the_photo_then_seeded_perturbations(shared_data):
    (photo,) = list_pool(parse_pool(f"f=image:{shared_data}/gcompris-farm/manifest.jsonl?stop=1")).load([0])
    first, again = views_of(photo, 0, ViewConfig(views=3)), views_of(photo, 0, ViewConfig(views=3))
    assert first[0] is photo and len(first) == 3
    assert [np.asarray(v).tobytes() for v in first[1:]] == [np.asarray(v).tobytes() for v in again[1:]]
    other = views_of(photo, 1, ViewConfig(views=3))  # another item number: other crops
    assert np.asarray(other[1]).tobytes() != np.asarray(first[1]).tobytes()
    for view in first[1:]:
        assert view.width * view.height >= 0.3 * photo.width * photo.height


@pytest.mark.models
def test_posteriors_rebuild_the_starter_image_embedding(shared_data, tmp_path):
    """ConSE over the starter's own class-name embeddings is exactly what the starter encodes a photo as."""
    from bonds.encoders import create_encoder

    starter = create_encoder("starter")
    pool = parse_pool(f"farm=image:{shared_data}/gcompris-farm/manifest.jsonl?stop=3")
    classify_pool(tmp_path, pool, ViewConfig(), progress=False)
    _, idx, w = load_posteriors(tmp_path, "farm")
    expected = starter.encode("image", list_pool(pool).load(range(3))).vectors
    np.testing.assert_allclose(conse(idx, w, starter.prototypes_cd.numpy()), expected, atol=1e-5)


def test_classified_photos_give_image_centred_pairs(tmp_path, shared_data):
    names = tmp_path / "names.txt"
    names.write_text("".join(f"class number {i}\n" for i in range(1000)))
    classes = parse_pool(f"names=text:{names}")
    embed_pools(tmp_path, SpaceSpec("s", "tiny", {"dim": 16}), [classes], progress=False)
    embed_pools(tmp_path, SpaceSpec("t", "tiny", {"dim": 12, "seed": 1, "modalities": ["text"]}), [classes],
                progress=False)
    photos = parse_pool(f"farm=image:{shared_data}/gcompris-farm/manifest.jsonl?stop=3")
    sidecar = classify_pool(tmp_path, photos, ViewConfig(views=2, topk=5), progress=False)
    assert sidecar["rows"] == 6 and sidecar["ids"][:2] == ["row0#0", "row0#1"]
    assert classify_pool(tmp_path, photos, ViewConfig(views=2, topk=5), progress=False) == sidecar  # kept
    with pytest.raises(ValueError, match="remove it or name the pool differently"):
        classify_pool(tmp_path, photos, ViewConfig(views=3, topk=5), progress=False)

    summary = build_pairs(tmp_path, PairsConfig("s", "t", ["names"], [], conse=["farm"], classes="names"),
                          progress=False)
    assert summary["centres"]["V"]["pairs"] == 6 and summary["centres"]["T"]["pairs"] == 1000
    _, centres = load_pairs(tmp_path)
    _, idx, w = load_posteriors(tmp_path, "farm")
    for side, space in ((0, "s"), (1, "t")):
        np.testing.assert_allclose(centres["V"][side], conse(idx, w, load_embeddings(tmp_path, space, "names")[1]),
                                   rtol=1e-6)
    for config, says in [(PairsConfig("s", "t", ["names"], [], conse=["farm"]), "class-name pool"),
                         (PairsConfig("s", "t", ["farm"], [], conse=["farm"], classes="names"), "both as embedded")]:
        with pytest.raises(ValueError, match=says):
            build_pairs(tmp_path, config, progress=False)
