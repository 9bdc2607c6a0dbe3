"""The CLIP/SigLIP and CLAP adapters on tiny random transformers models saved with `save_pretrained`.

Each folder holds what a user's downloaded model folder holds (config, weights, processor, tokenizer), built
offline from tiny configs and a tokenizer written here, and is loaded through `create_encoder`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bonds import media
from bonds.encoders import audio_features, create_encoder
from bonds.encoders.base import Audio
from bonds.encoders.imagebind import _bytes_to_unicode
from bonds.errors import CheckpointError
from tests.bonds.encoders.parity import assert_bf16_parity

transformers = pytest.importorskip("transformers")

SYMBOLS = list(_bytes_to_unicode().values())  # the byte alphabet of byte-level BPE (CLIP, RoBERTa)
TINY_LAYER = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)


def _write_bpe(folder, vocab: list[str], merges: list[tuple[str, str]]) -> tuple[str, str]:
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return str(folder / "vocab.json"), str(folder / "merges.txt")


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    merges = [("d", "o"), ("do", "g</w>"), ("c", "a"), ("ca", "r</w>"), ("b", "i"), ("r", "d</w>"), ("bi", "rd</w>")]
    vocab = SYMBOLS + [s + "</w>" for s in SYMBOLS] + ["".join(m) for m in merges] + ["<|startoftext|>",
                                                                                      "<|endoftext|>"]
    tokenizer = transformers.CLIPTokenizer(*_write_bpe(folder, vocab, merges))
    end = len(vocab) - 1
    config = transformers.CLIPConfig(
        text_config=dict(vocab_size=len(vocab), max_position_embeddings=77, bos_token_id=end - 1, eos_token_id=end,
                         pad_token_id=end, **TINY_LAYER),
        vision_config=dict(image_size=32, patch_size=8, **TINY_LAYER), projection_dim=8)
    torch.manual_seed(0)
    transformers.CLIPModel(config).save_pretrained(folder)
    images = transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    transformers.CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def siglip_folder(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder = tmp_path_factory.mktemp("siglip")
    words = ["<pad>", "</s>", "<unk>", "a", "dog", "car", "bird", "photo", "of"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                                                     unk_token="<unk>", model_max_length=16)
    config = transformers.SiglipConfig(text_config=dict(vocab_size=len(words), max_position_embeddings=16,
                                                        **TINY_LAYER),
                                       vision_config=dict(image_size=32, patch_size=8, **TINY_LAYER))
    torch.manual_seed(0)
    transformers.SiglipModel(config).save_pretrained(folder)
    images = transformers.SiglipImageProcessor(size={"height": 32, "width": 32})
    transformers.SiglipProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def _write_clap(folder, fusion: bool):
    merges = [("d", "o"), ("do", "g"), ("Ġ", "dog")]
    vocab = ["<s>", "<pad>", "</s>", "<unk>", *SYMBOLS, *("".join(m) for m in merges), "<mask>"]
    tokenizer = transformers.RobertaTokenizer(*_write_bpe(folder, vocab, merges))
    config = transformers.ClapConfig(
        text_config=dict(vocab_size=len(vocab), max_position_embeddings=80, pad_token_id=1, bos_token_id=0,
                         eos_token_id=2, **TINY_LAYER),
        audio_config=dict(patch_embeds_hidden_size=8, hidden_size=64, depths=[1, 1, 1, 1],
                          num_attention_heads=[2, 2, 2, 2], window_size=8, enable_fusion=fusion),
        projection_dim=8)
    torch.manual_seed(0)
    transformers.ClapModel(config).save_pretrained(folder)
    extractor = transformers.ClapFeatureExtractor(truncation="fusion" if fusion else "rand_trunc")
    transformers.ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clap_fused(tmp_path_factory):
    return create_encoder("clap", path=str(_write_clap(tmp_path_factory.mktemp("clap_fused"), fusion=True)))


@pytest.fixture(scope="module")
def clap_unfused(tmp_path_factory):
    return create_encoder("clap", path=str(_write_clap(tmp_path_factory.mktemp("clap_unfused"), fusion=False)))


def _unit_rows(vectors: np.ndarray, n: int, dim: int) -> None:
    assert vectors.shape == (n, dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


# ---------------------------------------------------------------- CLIP and SigLIP


def test_clip_embeds_text_and_real_images_with_its_own_processor(clip_folder, shared_data):
    encoder = create_encoder("clip", path=str(clip_folder), licence="MIT (test weights)")
    assert encoder.dim == 8 and encoder.modalities == ("text", "image")
    assert encoder.info()["licence"] == "MIT (test weights)"
    texts = ["A dog", "a photo of a bird on a car"]
    batch = encoder.preprocess("text", texts)
    assert batch["input_ids"].shape[1] == int(batch["attention_mask"].sum(1).max())  # padded to the longest only
    vectors = encoder.encode("text", texts).vectors
    _unit_rows(vectors, 2, 8)
    with torch.inference_mode():
        reference = encoder.model.get_text_features(**batch)
    reference = getattr(reference, "pooler_output", reference)
    assert np.allclose(vectors, torch.nn.functional.normalize(reference, dim=-1).numpy(), atol=1e-6)
    photos = [media.load("image", str(shared_data / "imagebind-demo" / f"{n}_image.jpg")) for n in ("dog", "car")]
    pixels = encoder.preprocess("image", [encoder.prepare("image", p) for p in photos])["pixel_values"]
    assert pixels.shape == (2, 3, 32, 32)  # the folder's crop size
    image_vectors = encoder.encode("image", photos).vectors
    _unit_rows(image_vectors, 2, 8)
    assert np.array_equal(image_vectors, encoder.encode("image", photos).vectors)


def test_siglip_pads_to_its_fixed_length_without_a_mask(siglip_folder, shared_data):
    encoder = create_encoder("clip", path=str(siglip_folder))
    assert encoder.dim == 16  # SigLIP has no projection_dim: the text projection size
    batch = encoder.preprocess("text", ["a dog", "a photo of a bird"])
    assert set(batch) == {"input_ids"} and batch["input_ids"].shape == (2, 16)
    _unit_rows(encoder.encode("text", ["a dog", "a photo of a bird"]).vectors, 2, 16)
    photo = media.load("image", str(shared_data / "imagebind-demo" / "bird_image.jpg"))
    _unit_rows(encoder.encode("image", [photo]).vectors, 1, 16)


def test_missing_model_folder_is_a_clear_error(tmp_path):
    for kind in ("clip", "clap"):
        with pytest.raises(CheckpointError, match="no config.json"):
            create_encoder(kind, path=str(tmp_path))


# ---------------------------------------------------------------- CLAP


def test_clap_fusion_model_is_deterministic_on_long_audio(clap_fused, shared_data, monkeypatch):
    music = media.load("audio", str(shared_data / "gcompris-music" / "africa.ogg"))  # 12.6 s at 44.1 kHz
    assert clap_fused.fusion and clap_fused.sample_rate == 48000 and clap_fused.dim == 8
    first = clap_fused.encode("audio", [music]).vectors
    _unit_rows(first, 1, 8)
    assert np.array_equal(first, clap_fused.encode("audio", [music]).vectors)
    batch = clap_fused.preprocess("audio", [clap_fused.prepare("audio", music)])
    assert batch["input_features"].shape == (1, 4, 1001, 64) and batch["is_longer"].tolist() == [[True]]
    # the extractor alone crops at random, which is why the adapter chooses the crops itself ...
    extractor = clap_fused.processor.feature_extractor
    wave = audio_features.resample(music.samples, music.sample_rate, 48000).astype(np.float64)
    draws = []
    for seed in (0, 1):
        np.random.seed(seed)
        draws.append(extractor([wave], sampling_rate=48000, return_tensors="np")["input_features"][0])
    assert not np.array_equal(draws[0], draws[1])
    # ... and chooses the middle of each third, where the extractor draws at random: otherwise identical
    monkeypatch.setattr(np.random, "choice", lambda candidates: candidates[len(candidates) // 2])
    middle = extractor([wave], sampling_rate=48000, return_tensors="np")["input_features"][0]
    assert np.allclose(batch["input_features"][0].numpy(), middle, atol=1e-5)


def test_clap_fusion_model_short_audio_and_other_rates(clap_fused, shared_data):
    dog = media.load("audio", str(shared_data / "imagebind-demo" / "dog_audio.wav"))  # 2.6 s, 44.1 kHz
    digit = media.load("audio", str(shared_data / "fsdd-dev" / "recordings" / "0_george_1.wav"))  # 8 kHz
    batch = clap_fused.preprocess("audio", [clap_fused.prepare("audio", a) for a in (dog, digit)])
    assert batch["input_features"].shape == (2, 4, 1001, 64) and batch["is_longer"].all()
    extractor = clap_fused.processor.feature_extractor
    wave = audio_features.resample(digit.samples, 8000, 48000).astype(np.float64)  # resampled to the extractor's rate
    direct = extractor([wave], sampling_rate=48000, return_tensors="np")["input_features"][0]
    assert np.allclose(batch["input_features"][1].numpy(), direct, atol=1e-5)
    vectors = clap_fused.encode("audio", [dog, digit]).vectors
    _unit_rows(vectors, 2, 8)
    alone = clap_fused.encode("audio", [digit]).vectors  # a clip's vector does not depend on its batch
    assert np.allclose(vectors[1], alone[0], atol=1e-5)
    _unit_rows(clap_fused.encode("text", ["a dog barking", "dog"]).vectors, 2, 8)


def test_clap_without_fusion_takes_the_centre_of_long_audio(clap_unfused, shared_data):
    horn = media.load("audio", str(shared_data / "esc50-demo" / "audio" / "car_horn_1-24074-A-43.wav"))
    long = Audio(np.concatenate([horn.samples, horn.samples, horn.samples[:22050]]), 44100)  # 10.5 s
    assert not clap_unfused.fusion
    batch = clap_unfused.preprocess("audio", [clap_unfused.prepare("audio", long)])
    assert batch["input_features"].shape == (1, 1, 1001, 64)
    wave = audio_features.resample(long.samples, 44100, 48000).astype(np.float64)
    start = (len(wave) - 480000) // 2
    extractor = clap_unfused.processor.feature_extractor
    centre = extractor([wave[start : start + 480000]], sampling_rate=48000, return_tensors="np")["input_features"][0]
    assert np.allclose(batch["input_features"][0].numpy(), centre, atol=1e-5)
    vectors = clap_unfused.encode("audio", [long, long]).vectors
    _unit_rows(vectors, 2, 8)
    assert np.array_equal(vectors, clap_unfused.encode("audio", [long, long]).vectors)


# ---------------------------------------------------------------- precision


@pytest.mark.parametrize("kind", ["clip", "siglip", "clap"])
def test_bf16_matches_fp32_on_real_media(kind, clip_folder, siglip_folder, tmp_path_factory, shared_data):
    farm = shared_data / "gcompris-farm"
    if kind == "clap":
        folder, encoder_kind = _write_clap(tmp_path_factory.mktemp("clap_bf16"), fusion=True), "clap"
        items = {"text": ["a dog", "dog"],
                 "audio": [media.load("audio", str(farm / f"{n}.ogg")) for n in ("dog", "cow")]}
    else:
        folder, encoder_kind = (clip_folder if kind == "clip" else siglip_folder), "clip"
        items = {"text": ["a dog", "a photo of a bird"],
                 "image": [media.load("image", str(farm / f"{n}.webp")) for n in ("dog", "sheep", "duck")]}
    assert_bf16_parity(lambda dtype: create_encoder(encoder_kind, path=str(folder), dtype=dtype), items)
