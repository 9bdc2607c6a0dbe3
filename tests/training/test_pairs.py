"""Pseudo-pairs: softmax weights against a dense numpy reference, the top-k truncation error on a real
bank, the pairing rules per modality, and the data modes."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from bonds.encoders import create_encoder
from bonds.vectors import l2_normalize
from training.embed import SpaceSpec, embed_pools, load_embeddings
from training.pairs import PairsConfig, build_pairs, load_pairs, modes_for, retrieve, topk_softmax
from training.pools import parse_pool


def dense_reference(xq, xb, banks, tau):
    """w = softmax(xq . xb^T / tau) over the whole bank, then w . M: what the paper writes."""
    s = xq.astype(np.float64) @ xb.T.astype(np.float64) / tau
    w = np.exp(s - s.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    return w, [w @ b.astype(np.float64) for b in banks]


def unit(rng, n, d):
    return l2_normalize(rng.standard_normal((n, d)).astype(np.float32))


def test_weights_with_k_equal_to_the_bank_are_the_dense_softmax():
    import faiss

    rng = np.random.default_rng(0)
    xq, xb = unit(rng, 37, 12), unit(rng, 50, 12)
    index = faiss.IndexFlatIP(12)
    index.add(xb)
    w_nk, I_nk = topk_softmax(xq, index, k=50, tau=0.01)
    dense = np.zeros((37, 50))
    np.put_along_axis(dense, I_nk, w_nk, axis=1)
    w_ref, _ = dense_reference(xq, xb, [], 0.01)
    np.testing.assert_allclose(dense, w_ref, rtol=1e-5, atol=1e-9)
    assert np.all(np.diff(w_nk, axis=1) <= 1e-12)  # neighbours come best first


def test_same_weights_in_both_spaces_blocks_do_not_matter():
    rng = np.random.default_rng(1)
    xq, xb, other = unit(rng, 300, 8), unit(rng, 200, 8), unit(rng, 200, 5)
    whole = retrieve(xq, xb, [xb, other], k=200, tau=0.01, block=1000)
    blocked = retrieve(xq, xb, [xb, other], k=200, tau=0.01, block=7)
    _, ref = dense_reference(xq, xb, [xb, other], 0.01)
    for a, b, r in zip(whole, blocked, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
        np.testing.assert_allclose(a, r, atol=1e-5)


def test_topk_truncation_error_on_a_real_bank(shared_data):
    """Bank: 8,000 Multi30k captions, queries: 500 other captions, tiny-encoder embeddings (64-d)."""
    with gzip.open(shared_data / "text/multi30k/train.en.gz", "rt") as handle:
        lines = [line.strip() for line in handle]
    encoder = create_encoder("tiny", dim=64, seed=0)
    xb, xq = encoder.encode("text", lines[:8000]).vectors, encoder.encode("text", lines[20000:20500]).vectors
    w_ref, (exact,) = dense_reference(xq, xb, [xb], 0.01)
    errors = {}
    for k in (16, 64, 256):
        (approx,) = retrieve(xq, xb, [xb], k=k, tau=0.01, block=128)
        errors[k] = np.abs(approx - exact).max()
        missing = 1 - np.sort(w_ref, axis=1)[:, ::-1][:, :k].sum(axis=1)
        # the error of w.M is bounded by twice the softmax mass outside the top k
        assert errors[k] <= 2 * missing.max() + 1e-5
    assert errors[16] > errors[64] > errors[256]
    cosine = (l2_normalize(approx) * l2_normalize(exact.astype(np.float32))).sum(axis=1)
    assert errors[64] < 5e-3 and errors[256] < 5e-4 and cosine.min() > 1 - 1e-5


@pytest.mark.models
def test_topk_truncation_error_on_minilm_captions(shared_data):
    """The same measurement in MiniLM space (the starter's text side), where the default k = 64 is used."""
    from bonds.encoders import list_encoders

    if "minilm" not in list_encoders():
        pytest.skip("the MiniLM encoder (bonds.encoders.starter) is not available")
    with gzip.open(shared_data / "text/multi30k/train.en.gz", "rt") as handle:
        lines = [line.strip() for line in handle]
    encoder = create_encoder("minilm")
    xb, xq = encoder.encode("text", lines[:1500]).vectors, encoder.encode("text", lines[20000:20100]).vectors
    w_ref, (exact,) = dense_reference(xq, xb, [xb], 0.01)
    (approx,) = retrieve(xq, xb, [xb], k=64, tau=0.01)
    missing = 1 - np.sort(w_ref, axis=1)[:, ::-1][:, :64].sum(axis=1)
    assert np.abs(approx - exact).max() <= 2 * missing.max() + 1e-5
    assert np.abs(approx - exact).max() < 2e-2
    cosine = (l2_normalize(approx) * l2_normalize(exact.astype(np.float32))).sum(axis=1)
    assert cosine.min() > 0.999


def test_modes():
    assert list(modes_for(["A", "T", "V"])) == ["mix", "A", "T", "V", "AT", "AV", "TV"]
    assert modes_for(["T", "V"]) == {"mix": ["T", "V"], "T": ["T"], "V": ["V"]}
    assert modes_for(["T"]) == {"mix": ["T"]}
    with pytest.raises(ValueError, match="no data"):
        modes_for(["T"], ["AT"])


def test_pairs_follow_the_modalities_of_each_space(tmp_path, shared_data):
    """Text is in both spaces (same item), images only in the source (retrieved through the text bank)."""
    text = parse_pool(f"en=text:{shared_data}/text/multi30k/train.en.gz?stop=400")
    images = parse_pool(f"cifar=image:{shared_data}/cifar10-train-3k/manifest.jsonl?step=30")
    embed_pools(tmp_path, SpaceSpec("s", "tiny", {"dim": 16}), [text, images], progress=False)
    embed_pools(tmp_path, SpaceSpec("t", "tiny", {"dim": 12, "seed": 1, "modalities": ["text"]}), [text],
                progress=False)
    for pseudo, n_images in (("own", 100), ("both", 200)):
        summary = build_pairs(tmp_path, PairsConfig("s", "t", ["en", "cifar"], ["en"], k=32,
                                                    pseudo=pseudo), progress=False)
        assert summary["centres"]["V"]["pairs"] == n_images and list(summary["modes"]) == ["mix", "T", "V"]
    _, centres = load_pairs(tmp_path)
    s_text, t_text = load_embeddings(tmp_path, "s", "en")[1], load_embeddings(tmp_path, "t", "en")[1]
    np.testing.assert_array_equal(centres["T"][0], s_text)
    np.testing.assert_array_equal(centres["T"][1], t_text)
    s_img = load_embeddings(tmp_path, "s", "cifar")[1]
    (ref_t,) = [l2_normalize(a.astype(np.float32)) for a in dense_reference(s_img, s_text, [t_text], 0.01)[1]]
    np.testing.assert_array_equal(centres["V"][0][:100], s_img)  # the image itself on the side that has images
    np.testing.assert_allclose(centres["V"][1][:100], ref_t, atol=2e-2)  # k = 32 of 400: truncated, close


@pytest.fixture()
def two_spaces(tmp_path):
    """A text file and 12 images; space `s` embeds text and images, `t` text only (nothing embedded yet)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "text.txt").write_text("".join(f"item {i} of {rng.integers(1000)}\n" for i in range(60)))
    (tmp_path / "imgs").mkdir()
    for i in range(12):
        Image.fromarray((rng.random((8, 8, 3)) * 255).astype("uint8")).save(tmp_path / "imgs" / f"{i:02d}.png")
    s, t = SpaceSpec("s", "tiny", {"dim": 16}), SpaceSpec("t", "tiny", {"dim": 12, "seed": 1, "modalities": ["text"]})
    return tmp_path, s, t


def test_bank_rows_must_be_the_same_items_in_both_spaces(two_spaces):
    work, s, t = two_spaces
    images = parse_pool(f"v=image:{work / 'imgs'}")
    embed_pools(work, s, [parse_pool(f"bank=text:{work / 'text.txt'}?stop=30"), images], progress=False)
    embed_pools(work, t, [parse_pool(f"bank=text:{work / 'text.txt'}?start=30")], progress=False)
    with pytest.raises(ValueError, match="bank pool 'bank' was embedded from .*stop=30.* and .*start=30.*same items"):
        build_pairs(work, PairsConfig("s", "t", ["v"], ["bank"], k=8), progress=False)


def test_a_pool_missing_in_a_space_that_has_its_modality_is_an_error(two_spaces):
    work, s, t = two_spaces
    text = parse_pool(f"en=text:{work / 'text.txt'}")
    embed_pools(work, s, [text, parse_pool(f"other=text:{work / 'text.txt'}?step=2")], progress=False)
    embed_pools(work, t, [text], progress=False)
    with pytest.raises(ValueError, match=r"pool 'other' \(text\) is not embedded in t, which also embeds text"):
        build_pairs(work, PairsConfig("s", "t", ["en", "other"], ["en"], k=8), progress=False)


def test_retrieval_needs_a_bank_and_sane_options(two_spaces):
    work, s, t = two_spaces
    text, images = parse_pool(f"en=text:{work / 'text.txt'}"), parse_pool(f"v=image:{work / 'imgs'}")
    embed_pools(work, s, [text, images], progress=False)
    embed_pools(work, t, [text], progress=False)
    with pytest.raises(ValueError, match="add --bank POOL"):
        build_pairs(work, PairsConfig("s", "t", ["en", "v"], []), progress=False)
    for option, says in [({"k": 0}, "k .* must be >= 1"), ({"tau": 0.0}, "tau .* positive"), ({"tau": -1.0}, "tau"),
                         ({"tau": float("nan")}, "tau"), ({"block": 0}, "block .* >= 1"),
                         ({"bank_limit": 0}, "bank limit")]:
        with pytest.raises(ValueError, match=says):
            build_pairs(work, PairsConfig("s", "t", ["en", "v"], ["en"], **option), progress=False)
    summary = build_pairs(work, PairsConfig("s", "t", ["en", "v"], ["en"], k=8), progress=False)
    _, centres = load_pairs(work)
    assert summary["centres"]["V"]["pairs"] == 12
    assert all(np.isfinite(a).all() for pair in centres.values() for a in pair)


def test_text_paired_through_the_class_names_gets_their_mixture_as_target(two_spaces):
    """`retrieve`: a source text pool's softmax over the class names in the source weights the class names in the
    target (text ConSE), even though the target embeds text too; the other pools keep their own pairs."""
    work, s, t = two_spaces
    names, en, other = (parse_pool(f"{name}=text:{work / 'text.txt'}?{cut}")
                        for name, cut in (("names", "stop=20"), ("en", "start=20&stop=40"), ("other", "start=40")))
    embed_pools(work, s, [names, en, other], progress=False)
    embed_pools(work, t, [names, en], progress=False)
    config = PairsConfig("s", "t", ["en", "other"], [], k=20, retrieve=["other"], classes="names")
    summary = build_pairs(work, config, progress=False)
    assert summary["centres"]["T"]["pools"] == {"en": 20, "other": 20}
    _, centres = load_pairs(work)
    x_other, c_s = load_embeddings(work, "s", "other")[1], load_embeddings(work, "s", "names")[1]
    c_t, t_en = load_embeddings(work, "t", "names")[1], load_embeddings(work, "t", "en")[1]
    (ref,) = dense_reference(x_other, c_s, [c_t], 0.01)[1]
    np.testing.assert_array_equal(centres["T"][1][:20], t_en)
    np.testing.assert_array_equal(centres["T"][0][20:], x_other)
    np.testing.assert_allclose(centres["T"][1][20:], l2_normalize(ref.astype(np.float32)), atol=1e-5)
    with pytest.raises(ValueError, match="must also be given as pools"):
        build_pairs(work, PairsConfig("s", "t", ["en"], [], retrieve=["other"], classes="names"), progress=False)
    with pytest.raises(ValueError, match="need the class-name pool"):
        build_pairs(work, PairsConfig("s", "t", ["other"], [], retrieve=["other"]), progress=False)


def test_text_only_one_space_reads_is_paired_through_the_bank(two_spaces):
    """`via_bank`: a text pool embedded only in the source (say German, the target's encoder English) pairs with
    the target bank's mixture its own softmax over the source bank picks, as an image would; embedding it in
    both spaces or in neither is an error that says so, and it must be one of the pools."""
    work, s, t = two_spaces
    bank, foreign = (parse_pool(f"{name}=text:{work / 'text.txt'}?{cut}")
                     for name, cut in (("bank", "stop=40"), ("foreign", "start=40")))
    embed_pools(work, s, [bank, foreign], progress=False)
    embed_pools(work, t, [bank], progress=False)
    config = PairsConfig("s", "t", ["bank", "foreign"], ["bank"], k=40, via_bank=["foreign"])
    summary = build_pairs(work, config, progress=False)
    assert summary["centres"]["T"]["pools"] == {"bank": 40, "foreign": 20}
    _, centres = load_pairs(work)
    x, b_s, b_t = (load_embeddings(work, space, name)[1] for space, name in (("s", "foreign"), ("s", "bank"),
                                                                              ("t", "bank")))
    (ref,) = dense_reference(x, b_s, [b_t], 0.01)[1]
    np.testing.assert_array_equal(centres["T"][0][40:], x)
    np.testing.assert_allclose(centres["T"][1][40:], l2_normalize(ref.astype(np.float32)), atol=1e-5)
    with pytest.raises(ValueError, match="must also be given as pools"):
        build_pairs(work, PairsConfig("s", "t", ["bank"], ["bank"], via_bank=["foreign"]), progress=False)
    with pytest.raises(ValueError, match="embedded in both spaces"):
        build_pairs(work, PairsConfig("s", "t", ["bank"], ["bank"], via_bank=["bank"]), progress=False)
    with pytest.raises(ValueError, match="both through the bank .* and through the class names"):
        build_pairs(work, PairsConfig("s", "t", ["foreign"], ["bank"], via_bank=["foreign"], retrieve=["foreign"],
                                      classes="bank"), progress=False)
