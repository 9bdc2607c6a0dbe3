"""Media decoding on real files from ../shared/data and on a generated corpus of bad inputs."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from bonds.errors import MediaError, MediaTooLargeError, UnsupportedMediaError
from bonds.media import MediaLimits, decode_audio, decode_image, load


def _encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _wav(samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def test_real_images_decode_to_rgb(shared_data):
    for path in [shared_data / "imagebind-demo" / "dog_image.jpg", shared_data / "gcompris-farm" / "cow.webp"]:
        image = decode_image(path.read_bytes())
        assert image.mode == "RGB" and min(image.size) > 32


def test_real_audio_decodes_at_its_own_rate(shared_data):
    wav = decode_audio((shared_data / "imagebind-demo" / "dog_audio.wav").read_bytes())
    ogg = decode_audio((shared_data / "gcompris-farm" / "cow.ogg").read_bytes())
    speech = decode_audio(next((shared_data / "fsdd-dev" / "recordings").glob("*.wav")).read_bytes())
    assert speech.sample_rate == 8000 and ogg.samples.ndim == 1 and wav.duration > 0.5
    assert all(a.samples.dtype == np.float32 and np.isfinite(a.samples).all() for a in (wav, ogg, speech))
    assert np.abs(wav.samples).max() <= 1.0 and np.abs(speech.samples).max() <= 1.0  # PCM: exact range


@pytest.mark.parametrize("mode", ["CMYK", "L", "LA", "RGBA", "P", "I;16"])
def test_every_image_mode_becomes_rgb(mode):
    source = Image.fromarray((np.arange(32 * 32 * 3) % 255).astype(np.uint8).reshape(32, 32, 3))
    image = source.convert(mode) if mode != "I;16" else Image.fromarray(
        (np.arange(1024).reshape(32, 32) * 60).astype(np.uint16))
    fmt = "TIFF" if mode in ("CMYK", "I;16") else "PNG"
    decoded = decode_image(_encode(image, fmt))
    assert decoded.mode == "RGB" and decoded.size == (32, 32)
    if mode == "I;16":  # 65535 -> 255 whatever the picture holds: not clipped to white, not stretched
        want = np.rint(np.arange(1024).reshape(32, 32) * 60 / 257.0)
        assert np.array_equal(np.asarray(decoded)[..., 0], want.astype(np.uint8))


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_a_16_bit_grey_picture_decodes_as_its_8_bit_save_does(fmt):
    """A dark 16-bit picture stays dark and mid-grey stays mid-grey (no per-image contrast stretch)."""
    values = np.linspace(0, 4000, 32 * 32).reshape(32, 32).astype(np.uint16)
    dark = np.asarray(decode_image(_encode(Image.fromarray(values), fmt)))[..., 0]
    assert dark.max() == round(4000 / 257)
    grey = np.asarray(decode_image(_encode(Image.fromarray(np.full((8, 8), 32768, np.uint16)), fmt)))
    assert (grey == 128).all()


def test_transparent_pixels_become_white_and_exif_orientation_applies():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert decode_image(_encode(rgba, "PNG")).getpixel((0, 0)) == (255, 255, 255)
    wide = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    assert decode_image(_encode(wide, "JPEG", exif=exif)).size == (20, 40)


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert decode_image(data).getpixel((0, 0))[0] > 200


@pytest.mark.parametrize(
    "data, error, message",
    [
        (b"", MediaError, "empty"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, MediaError, "corrupt|not a decodable"),
        (np.random.default_rng(0).bytes(500), UnsupportedMediaError, "not a decodable image"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", UnsupportedMediaError, "supported formats"),
    ],
)
def test_bad_images_raise_typed_errors(data, error, message):
    with pytest.raises(error, match=message):
        decode_image(data)


def test_truncated_jpeg_and_pixel_limit():
    jpeg = _encode(Image.new("RGB", (64, 64), (10, 200, 30)), "JPEG")
    with pytest.raises(MediaError):
        decode_image(jpeg[: len(jpeg) // 3])
    with pytest.raises(MediaTooLargeError, match="pixels"):
        decode_image(_encode(Image.new("1", (3000, 3000)), "PNG"), MediaLimits(max_image_pixels=1_000_000))


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_24", "FLOAT"])
def test_wav_sample_formats_and_channels(subtype):
    stereo = np.stack([np.linspace(-0.5, 0.5, 800), np.linspace(0.5, -0.5, 800)], axis=1)
    audio = decode_audio(_wav(stereo, 8000, subtype))
    assert audio.samples.shape == (800,) and np.abs(audio.samples).max() < 0.02  # mono mix of opposite channels


def test_six_channels_and_bad_audio():
    six = np.tile(np.sin(np.arange(4800) / 10.0)[:, None], (1, 6)) * 0.3
    assert decode_audio(_wav(six, 48000)).samples.shape == (4800,)
    with pytest.raises(MediaError, match="no samples"):
        decode_audio(_wav(np.zeros((0, 1)), 16000))
    with pytest.raises(UnsupportedMediaError):
        decode_audio(b"RIFF1234WAVEjunkjunk")
    with pytest.raises(MediaTooLargeError, match="limit is 1 s"):
        decode_audio(_wav(np.zeros(32000), 16000), MediaLimits(max_audio_seconds=1))


def test_sample_rates_outside_the_decoded_range_are_refused():
    with pytest.raises(UnsupportedMediaError, match="500 Hz is outside the 1000-768000 Hz"):
        decode_audio(_wav(np.zeros(500), 500))
    assert decode_audio(_wav(np.zeros(1000), 1000)).sample_rate == 1000


def test_load_text_limits():
    assert load("text", "hello") == "hello"
    with pytest.raises(MediaTooLargeError, match="characters"):
        load("text", "x" * 30, MediaLimits(max_text_chars=10))
    with pytest.raises(MediaError, match="unknown modality"):
        load("video", b"...")
