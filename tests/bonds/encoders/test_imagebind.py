"""The ImageBind adapter on a tiny random model saved the way a user holds the official checkpoint.

The tiny model has the real input sizes (224 px, 77 tokens, 3 x 128 x 204 fbank) on narrow towers; it is
saved with `torch.save(state_dict)` under the official names and loaded through `create_encoder`, so the
path from a user's `imagebind_huge.pth` to vectors is the one tested. Preprocessing runs on real media.
"""

from __future__ import annotations

import gzip
import json
import math
from collections import Counter
from dataclasses import asdict

import numpy as np
import pytest
import torch
from PIL import Image

from bonds import media
from bonds.encoders import audio_features, create_encoder
from bonds.encoders.audio_features import FBANK_MEAN, FBANK_STD, clip_bounds, imagebind_audio_clips, kaldi_fbank
from bonds.encoders.base import Audio
from bonds.encoders.imagebind import ClipBpeTokenizer, _bytes_to_unicode, imagebind_image, normalize_pixels
from bonds.encoders.imagebind_model import ImageBindConfig, ImageBindModel
from bonds.errors import CheckpointError
from tests.bonds.encoders.parity import assert_bf16_parity

CORPUS = "a dog . a car . a bird . a photo of a dog barking . the sound of a car engine . birds sing in the trees"


def train_merges(corpus: str, count: int) -> list[tuple[str, str]]:
    """A few byte-level BPE merges learnt from `corpus` (most frequent pair first, ties by name)."""
    byte_map = _bytes_to_unicode()
    words = Counter(corpus.lower().split())
    splits = {w: [*(byte_map[b] for b in w.encode())][:-1] + [byte_map[w.encode()[-1]] + "</w>"] for w in words}
    merges = []
    for _ in range(count):
        pairs = Counter()
        for word, parts in splits.items():
            for pair in zip(parts, parts[1:], strict=False):
                pairs[pair] += words[word]
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        for word, parts in splits.items():
            out, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    out.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            splits[word] = out
    return merges


@pytest.fixture(scope="module")
def merges():
    return train_merges(CORPUS, 40)


@pytest.fixture(scope="module")
def user_files(tmp_path_factory, merges):
    """What a user has on disk: the state dict (official names) and CLIP's gzipped merge list."""
    folder = tmp_path_factory.mktemp("imagebind")
    torch.manual_seed(0)
    model = ImageBindModel(ImageBindConfig.tiny()).eval()
    torch.save(model.state_dict(), folder / "imagebind_tiny.pth")
    with gzip.open(folder / "bpe_simple_vocab_16e6.txt.gz", "wt", encoding="utf-8") as handle:
        handle.write("\n".join(["bpe_simple_vocab_16e6.txt#version: 0.2", *(" ".join(m) for m in merges)]) + "\n")
    return folder, model


@pytest.fixture(scope="module")
def encoder(user_files):
    folder, _ = user_files
    return create_encoder("imagebind", checkpoint=str(folder / "imagebind_tiny.pth"), config="tiny")


def _load(path):
    return media.load("audio" if str(path).endswith((".wav", ".ogg")) else "image", str(path))


# ---------------------------------------------------------------- naming and loading


def test_state_dict_follows_the_official_names(user_files):
    _, model = user_files
    state = model.state_dict()
    width = 32
    expected_shapes = {
        "modality_preprocessors.vision.rgbt_stem.proj.1.weight": (width, 3, 2, 14, 14),
        "modality_preprocessors.vision.cls_token": (1, 1, width),
        "modality_preprocessors.vision.pos_embedding_helper.pos_embed": (1, 257, width),
        "modality_preprocessors.text.token_embedding.weight": (49408, width),
        "modality_preprocessors.text.pos_embed": (1, 77, width),
        "modality_preprocessors.text.mask": (77, 77),
        "modality_preprocessors.audio.rgbt_stem.proj.weight": (width, 1, 16, 16),
        "modality_preprocessors.audio.rgbt_stem.norm_layer.weight": (width,),
        "modality_preprocessors.audio.pos_embedding_helper.pos_embed": (1, 229, width),  # 12 x 19 patches + cls
        "modality_trunks.vision.pre_transformer_layer.0.weight": (width,),
        "modality_trunks.vision.blocks.0.attn.in_proj_weight": (3 * width, width),
        "modality_trunks.vision.blocks.1.attn.out_proj.bias": (width,),
        "modality_trunks.text.blocks.1.mlp.fc2.weight": (width, 4 * width),
        "modality_trunks.audio.blocks.0.attn.bias_k": (1, 1, width),
        "modality_trunks.audio.blocks.1.norm_2.bias": (width,),
        "modality_heads.vision.2.weight": (16, width),
        "modality_heads.text.proj.0.weight": (width,),
        "modality_heads.text.proj.1.weight": (16, width),
        "modality_heads.audio.0.bias": (width,),
        "modality_postprocessors.text.1.log_logit_scale": (),
        "modality_postprocessors.audio.1.log_logit_scale": (),
    }
    for key, shape in expected_shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert {k.split(".")[0] for k in state} == {"modality_preprocessors", "modality_trunks", "modality_heads",
                                                 "modality_postprocessors"}
    assert "modality_trunks.text.pre_transformer_layer.0.weight" not in state  # only vision has the pre-norm
    assert "modality_trunks.vision.blocks.0.attn.bias_k" not in state  # only audio has bias_kv
    assert math.isclose(state["modality_postprocessors.audio.1.log_logit_scale"].exp().item(), 20.0, rel_tol=1e-6)
    mask = state["modality_preprocessors.text.mask"]
    assert torch.isinf(mask[0, 1]) and mask[1, 0] == 0


def test_huge_config_has_the_published_sizes():
    with torch.device("meta"):  # no memory: shapes only
        model = ImageBindModel(ImageBindConfig.resolve("huge"))
    state = model.state_dict()
    assert state["modality_preprocessors.vision.rgbt_stem.proj.1.weight"].shape == (1280, 3, 2, 14, 14)
    assert state["modality_heads.vision.2.weight"].shape == (1024, 1280)
    assert state["modality_heads.text.proj.1.weight"].shape == (1024, 1024)
    assert state["modality_heads.audio.2.weight"].shape == (1024, 768)
    assert "modality_trunks.vision.blocks.31.mlp.fc1.weight" in state
    assert "modality_trunks.vision.blocks.32.norm_1.weight" not in state
    assert "modality_trunks.text.blocks.23.attn.in_proj_weight" in state
    assert "modality_trunks.audio.blocks.11.attn.bias_v" in state
    # the audio trunk's stochastic depth ramps from 0 to 0.1 (training only; identity in eval)
    assert model.modality_trunks.audio.blocks[0].drop_path.__class__.__name__ == "Identity"
    assert model.modality_trunks.audio.blocks[-1].drop_path.rate == pytest.approx(0.1)


def test_user_checkpoint_loads_and_embeds_every_modality(encoder, user_files, shared_data):
    _, reference = user_files
    assert encoder.dim == 16 and encoder.modalities == ("text", "image", "audio")
    assert encoder.info()["licence"] == "CC BY-NC-SA 4.0 (non-commercial)"
    demo = shared_data / "imagebind-demo"
    items = {
        "text": ["A dog.", "A car", "A bird"],
        "image": [_load(demo / f"{n}_image.jpg") for n in ("dog", "car")],
        "audio": [_load(demo / "dog_audio.wav"), _load(shared_data / "fsdd-dev" / "recordings" / "0_george_0.wav")],
    }
    for modality, batch in items.items():
        encoded = encoder.encode(modality, batch)
        assert encoded.vectors.shape == (len(batch), 16) and encoded.vectors.dtype == np.float32
        assert np.allclose(np.linalg.norm(encoded.vectors, axis=1), 1.0, atol=1e-5)
        again = encoder.encode(modality, batch).vectors
        assert np.array_equal(encoded.vectors, again)
        # the loaded weights are the saved ones: same numbers as the model that wrote the file
        with torch.inference_mode():
            model_input = (torch.stack([imagebind_image(i) for i in batch]) if modality == "image"  # the float path
                           else encoder.preprocess(modality, [encoder.prepare(modality, i) for i in batch])[0])
            expected = reference.embed("vision" if modality == "image" else modality, model_input)
        assert np.allclose(encoded.vectors, torch.nn.functional.normalize(expected, dim=-1).numpy(), atol=1e-5)


def test_bf16_matches_fp32_on_real_media(user_files, shared_data):
    folder, _ = user_files
    demo = shared_data / "imagebind-demo"
    assert_bf16_parity(
        lambda dtype: create_encoder("imagebind", checkpoint=str(folder / "imagebind_tiny.pth"), config="tiny",
                                     dtype=dtype),
        {"text": ["A dog.", "A car", "A bird", "Two people on a bench by the river at dusk."],
         "image": [_load(demo / f"{n}_image.jpg") for n in ("dog", "car", "bird")],
         "audio": [_load(demo / "dog_audio.wav"), _load(shared_data / "fsdd-dev" / "recordings" / "0_george_0.wav")]})


def test_images_cross_to_the_device_as_bytes_and_normalise_there(encoder, shared_data):
    """Prepared images are uint8 (4x less to copy to a GPU); normalising them on the device gives the
    float input the official pipeline computes on the CPU."""
    photo = _load(shared_data / "imagebind-demo" / "dog_image.jpg")
    pixels = encoder.prepare("image", photo)
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 224, 224)
    reference = imagebind_image(photo)[:, 0]
    assert torch.equal(normalize_pixels(pixels.unsqueeze(0))[0], reference)


def test_audio_embedding_is_the_mean_of_normalised_clip_embeddings(encoder, shared_data):
    audio = _load(shared_data / "esc50-demo" / "audio" / "car_horn_1-24074-A-43.wav")
    clips = encoder.preprocess("audio", [encoder.prepare("audio", audio)])[0]  # (1, 3, 1, 128, 204)
    with torch.inference_mode():
        per_clip = torch.nn.functional.normalize(encoder.model.embed("audio", clips[0]), dim=-1)
    expected = torch.nn.functional.normalize(per_clip.mean(0), dim=-1).numpy()
    assert np.allclose(encoder.encode("audio", [audio]).vectors[0], expected, atol=1e-5)


def test_safetensors_and_extra_modalities_load(user_files, tmp_path):
    from safetensors.torch import save_file

    folder, model = user_files
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["modality_trunks.depth.blocks.0.attn.in_proj_weight"] = torch.zeros(3, 1)  # official extra towers: ignored
    state["modality_heads.imu.3.weight"] = torch.zeros(2, 2)
    save_file(state, str(tmp_path / "imagebind.safetensors"))
    sizes = json.loads(json.dumps(asdict(ImageBindConfig.tiny())))  # a config as a settings file would give it
    encoder = create_encoder("imagebind", checkpoint=str(tmp_path / "imagebind.safetensors"),
                             bpe_path=str(folder / "bpe_simple_vocab_16e6.txt.gz"), config=sizes)
    assert encoder.encode("text", ["a dog"]).vectors.shape == (1, 16)


def test_checkpoint_that_does_not_fit_is_a_clear_error(user_files, tmp_path):
    folder, model = user_files
    bpe = str(folder / "bpe_simple_vocab_16e6.txt.gz")
    state = model.state_dict()
    del state["modality_heads.text.proj.1.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"1 missing \(e\.g\. modality_heads\.text\.proj\.1\.weight\)"):
        create_encoder("imagebind", checkpoint=str(tmp_path / "partial.pth"), bpe_path=bpe, config="tiny")
    with pytest.raises(CheckpointError, match="shape mismatch"):  # a tiny file read as huge
        create_encoder("imagebind", checkpoint=str(folder / "imagebind_tiny.pth"), bpe_path=bpe, config="huge")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        create_encoder("imagebind", checkpoint=str(tmp_path / "garbage.pth"), bpe_path=bpe, config="tiny")
    with pytest.raises(CheckpointError, match="not found"):
        create_encoder("imagebind", checkpoint=str(tmp_path / "absent.pth"), bpe_path=bpe, config="tiny")
    with pytest.raises(CheckpointError, match="BPE vocabulary"):
        create_encoder("imagebind", checkpoint=str(tmp_path / "partial.pth"), config="tiny")


# ---------------------------------------------------------------- text


def test_tokenizer_matches_transformers_clip_tokenizer(user_files, merges, tmp_path):
    transformers = pytest.importorskip("transformers")
    folder, _ = user_files
    ours = ClipBpeTokenizer(folder / "bpe_simple_vocab_16e6.txt.gz")
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + ["<|startoftext|>",
                                                                                      "<|endoftext|>"]
    (tmp_path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    reference = transformers.CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    for text in ["A dog.", "a photo of a DOG barking!!", "  birds   sing\tin the trees ", "car's engine: 42 dB",
                 "café"]:
        ids, _ = ours([text])
        row = ids[0].tolist()[: ids[0].tolist().index(ours.end) + 1]  # padding is id 0, which is also "!"
        assert row == reference(text).input_ids, text


def test_tokenizer_layout_truncation_and_end_token(encoder):
    ids, notes = encoder.preprocess("text", [encoder.prepare("text", t) for t in ["A  Dog.", "dog " * 200]])
    assert ids.shape == (2, 77) and ids.dtype == torch.int64
    start, end = encoder.tokenizer.start, encoder.tokenizer.end
    assert ids[0, 0] == start and ids[0].argmax() == int((ids[0] != 0).sum()) - 1 and ids[0].max() == end
    assert torch.equal(ids[0], torch.from_numpy(encoder.tokenizer(["a dog."])[0][0]))  # case and spaces cleaned
    assert ids[1, -1] == end and (ids[1] != 0).all()  # start + 75 tokens + end
    assert notes == [None, "text cut to 77 tokens"]
    assert encoder.encode("text", ["dog " * 200]).notes == ["text cut to 77 tokens"]
    # CLIP cleans text with ftfy.fix_text first: full-width letters, ligatures and mojibake read as plain text
    plain = encoder.tokenizer(["a dog. caf\u00e9"])[0][0]
    assert np.array_equal(encoder.tokenizer(["\uff41 \uff44\uff4f\uff47. caf\u00c3\u00a9"])[0][0], plain)


# ---------------------------------------------------------------- images


def test_image_tensor_on_a_real_photo(shared_data):
    photo = _load(shared_data / "imagebind-demo" / "dog_image.jpg")
    x = imagebind_image(photo)
    assert x.shape == (3, 2, 224, 224) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], x[:, 1])  # the image repeated into a 2-frame clip
    mean, std = torch.tensor([0.48145466, 0.4578275, 0.40821073]), torch.tensor([0.26862954, 0.26130258, 0.27577711])
    pixels = x[:, 0] * std[:, None, None] + mean[:, None, None]
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert torch.allclose(pixels * 255, (pixels * 255).round(), atol=1e-3)  # 8-bit values, /255


def test_image_resize_shorter_side_then_centre_crop():
    ramp = np.tile(np.arange(448, dtype=np.float64) * 255 / 447, (224, 1)).astype(np.uint8)  # 448 x 224 landscape
    x = imagebind_image(Image.fromarray(np.stack([ramp] * 3, axis=-1)))
    red = x[0, 0] * 0.26862954 + 0.48145466
    # already 224 high: no resize, the crop keeps columns 112..335
    assert np.allclose(red[0].numpy() * 255, ramp[0, 112:336], atol=1e-3)
    tall = Image.new("RGB", (100, 300), (255, 0, 0))
    tall.paste((0, 0, 255), (0, 0, 100, 50))  # top sixth blue: resized to 224 x 672, the crop keeps rows 224..447
    y = imagebind_image(tall)[:, 0] * torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]
    assert y.shape == (3, 224, 224) and (y[0] + 0.48145466 > 0.99).all()


# ---------------------------------------------------------------- audio


def numpy_kaldi_fbank(wave: np.ndarray, rate: int = 16000, bins: int = 128) -> np.ndarray:
    """An independent float64 loop over frames of Kaldi's compute-fbank-feats with ImageBind's options."""
    size, shift, nfft = 400, 160, 512
    mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)  # noqa: E731
    low, high = mel(20.0), mel(rate / 2)
    edges = [low + k * (high - low) / (bins + 1) for k in range(bins + 2)]
    fft_mel = mel(np.arange(nfft // 2 + 1) * rate / nfft)
    banks = np.zeros((bins, nfft // 2 + 1))
    for m in range(bins):
        left, centre, right = edges[m], edges[m + 1], edges[m + 2]
        for k in range(nfft // 2):  # Kaldi leaves the Nyquist bin out
            if left < fft_mel[k] <= centre:
                banks[m, k] = (fft_mel[k] - left) / (centre - left)
            elif centre < fft_mel[k] < right:
                banks[m, k] = (right - fft_mel[k]) / (right - centre)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(size) / (size - 1))
    rows = []
    for start in range(0, len(wave) - size + 1, shift):
        frame = wave[start : start + size].astype(np.float64)
        frame = frame - frame.mean()
        frame = frame - 0.97 * np.concatenate([frame[:1], frame[:-1]])
        spectrum = np.abs(np.fft.rfft(frame * window, n=nfft)) ** 2
        rows.append(np.log(np.maximum(banks @ spectrum, np.finfo(np.float32).eps)))
    return np.array(rows)


def test_kaldi_fbank_matches_an_independent_reference(shared_data):
    audio = _load(shared_data / "esc50-demo" / "audio" / "car_horn_1-24074-A-43.wav")
    wave = audio_features.resample(audio.samples, audio.sample_rate, 16000)[16000:48000]
    ours = kaldi_fbank(torch.from_numpy(wave)).numpy()
    reference = numpy_kaldi_fbank(wave)
    assert ours.shape == reference.shape == (198, 128)  # 1 + (32000 - 400) // 160 frames
    loud = reference > -10  # float32 vs float64: compare in log space where the energy is not at the floor
    assert loud.mean() > 0.9
    assert np.abs(ours - reference)[loud].max() < 5e-4  # observed ~1e-4: float32 rounding only
    assert np.abs(ours - reference).mean() < 5e-5


def test_clip_bounds_follow_the_official_sampler():
    assert clip_bounds(5 * 16000) == [(0, 32000), (16000, 48000), (32000, 64000)]  # starts at k * (5 - 2) / 3
    assert clip_bounds(12 * 16000)[-1] == (int(16000 * 20 / 3), int(16000 * 20 / 3) + 32000)  # not the file's end
    assert clip_bounds(16000) == [(0, 32000)] * 3  # shorter than a clip: three identical clips


@pytest.mark.parametrize("path", ["esc50-demo/audio/cat_3-95694-A-5.wav", "imagebind-demo/dog_audio.wav",
                                  "fsdd-dev/recordings/0_george_1.wav", "gcompris-music/america.ogg"])
def test_audio_clips_on_real_recordings(shared_data, path):
    audio = _load(shared_data / path)
    clips = imagebind_audio_clips(audio)
    assert clips.shape == (3, 1, 128, 204) and clips.dtype == torch.float32 and torch.isfinite(clips).all()
    assert torch.equal(clips, imagebind_audio_clips(audio))
    resampled = math.ceil(len(audio.samples) * 16000 / audio.sample_rate)
    assert len(audio_features.resample(audio.samples, audio.sample_rate, 16000)) == resampled
    frames = 1 + (min(resampled, 32000) - 400) // 160
    padded = torch.tensor((0.0 - FBANK_MEAN) / FBANK_STD)  # frames past the clip: zeros, then normalised
    assert torch.allclose(clips[0, 0, :, frames:], padded)
    assert not torch.allclose(clips[0, 0, :, frames - 1], padded)


def test_resampling_to_16k_from_other_rates(shared_data):
    speech = _load(shared_data / "fsdd-dev" / "recordings" / "0_george_1.wav")  # 8 kHz
    horn = _load(shared_data / "esc50-demo" / "audio" / "car_horn_1-24074-A-43.wav")  # 44.1 kHz
    studio = Audio(audio_features.resample(horn.samples, 44100, 48000), 48000)  # the same sound at 48 kHz
    for audio in (speech, horn, studio):
        out = audio_features.resample(audio.samples, audio.sample_rate, 16000)
        assert len(out) == math.ceil(len(audio.samples) * 16000 / audio.sample_rate)
    from_48k, from_44k = imagebind_audio_clips(studio), imagebind_audio_clips(horn)
    assert from_48k.shape == from_44k.shape == (3, 1, 128, 204)
    assert (from_48k - from_44k).abs().mean() < 0.05  # the same sound gives nearly the same features


def test_non_overlapping_clips_are_independent(shared_data):
    audio = _load(shared_data / "gcompris-music" / "africa.ogg")  # 12.6 s: clips 3.5 s apart do not overlap
    wave = torch.from_numpy(audio_features.resample(audio.samples, audio.sample_rate, 16000).copy())
    clips = imagebind_audio_clips(audio)
    for k, (start, end) in enumerate(clip_bounds(len(wave))):
        segment = wave[start:end] - wave[start:end].mean()
        fbank = kaldi_fbank(segment).T  # 198 frames; the rest of the 204 is padding
        assert torch.allclose(clips[k, 0, :, :198], (fbank - FBANK_MEAN) / FBANK_STD, atol=1e-5)
