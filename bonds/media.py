"""Decoding of media bytes into the items encoders take, shared by every space.

Images: Pillow (JPEG, PNG, WebP, GIF first frame, BMP, TIFF), EXIF orientation applied, every mode
converted to RGB, with a pixel limit checked before pixels are decoded. Audio: soundfile (WAV, FLAC,
OGG/Vorbis/Opus, MP3 where libsndfile has it), mixed down to mono float32, with a duration limit.
Each failure is a typed `MediaError` that the service turns into a 4xx.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np

from bonds.encoders.base import Audio
from bonds.errors import MediaError, MediaTooLargeError, UnsupportedMediaError


@dataclass(frozen=True)
class MediaLimits:
    max_image_pixels: int = 40_000_000  # 40 MP: larger is refused before decoding (bomb guard)
    max_audio_seconds: float = 600.0
    max_text_chars: int = 20_000


DEFAULT_LIMITS = MediaLimits()
_IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
# Sample rates decoded: telephone speech (8 kHz) to studio (384 kHz) with room on both sides; outside it a
# file is more likely a fabrication than a recording, and the resampling ratio to 16/48 kHz stays in 1:48.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 768_000


def image_size(data: bytes) -> tuple[int, int] | None:
    """`(width, height)` an image's header declares, no pixel decoded; None when it cannot be read (then
    `decode_image` says why)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=_IMAGE_FORMATS) as image:
                return image.size
    except Exception:  # noqa: BLE001 - any unreadable header: decoding reports it properly
        return None


def audio_shape(data: bytes) -> tuple[int, int, int] | None:
    """`(frames, channels, sample rate)` an audio file's header declares, nothing decoded; None when it
    cannot be read (then `decode_audio` says why)."""
    import soundfile as sf

    try:
        info = sf.info(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - as above
        return None
    return int(info.frames), int(info.channels), int(info.samplerate)


def decode_image(data: bytes, limits: MediaLimits = DEFAULT_LIMITS):
    """Bytes -> RGB `PIL.Image.Image`, or a `MediaError` that says why not."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise MediaError("image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=_IMAGE_FORMATS)
            width, height = image.size
            if width * height > limits.max_image_pixels:
                raise MediaTooLargeError(
                    f"image is {width}x{height} = {width * height} pixels; the limit is {limits.max_image_pixels}"
                )
            image.seek(0)  # first frame of animations
            image.load()
    except MediaError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        if isinstance(exc, UnidentifiedImageError):
            raise UnsupportedMediaError(
                f"not a decodable image; supported formats: {', '.join(_IMAGE_FORMATS)}"
            ) from None
        raise MediaTooLargeError(f"image refused as a decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise MediaError(f"image is corrupt or truncated: {exc}") from None
    return _to_rgb(ImageOps.exif_transpose(image))


def _to_rgb(image):
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grey (PNG opens it as I;16 or I): a fixed 65535 -> 255 rescale, as an 8-bit save of the same
        # picture would hold; stretching by the image's own maximum would brighten dark images
        array = np.clip(np.asarray(image, dtype=np.float64), 0, 65535) / 257.0
        return Image.fromarray(np.rint(array).astype(np.uint8)).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        # transparent pixels become white, as a viewer shows them, not black
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode_audio(data: bytes, limits: MediaLimits = DEFAULT_LIMITS) -> Audio:
    """Bytes -> mono float32 `Audio` at the file's own rate, or a `MediaError`."""
    import soundfile as sf

    if not data:
        raise MediaError("audio is empty (0 bytes)")
    try:
        with sf.SoundFile(io.BytesIO(data)) as handle:
            rate, frames = handle.samplerate, handle.frames
            if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
                raise UnsupportedMediaError(f"audio sample rate {rate} Hz is outside the {MIN_SAMPLE_RATE}-"
                                            f"{MAX_SAMPLE_RATE} Hz this service decodes")
            if frames > 0 and frames / rate > limits.max_audio_seconds:
                raise MediaTooLargeError(
                    f"audio lasts {frames / rate:.1f} s; the limit is {limits.max_audio_seconds:g} s"
                )
            samples = handle.read(dtype="float32", always_2d=True)
    except MediaError:
        raise
    except sf.LibsndfileError as exc:
        reason = getattr(exc, "error_string", None) or "format not recognised"  # str(exc) names the BytesIO object
        raise UnsupportedMediaError(f"not a decodable audio file (WAV, FLAC, OGG, MP3): {reason}") from None
    except (RuntimeError, ValueError, EOFError) as exc:
        raise MediaError(f"audio is corrupt or truncated: {exc}") from None
    if samples.shape[0] == 0:
        raise MediaError("audio has no samples")
    if samples.shape[0] / rate > limits.max_audio_seconds:
        raise MediaTooLargeError(
            f"audio lasts {samples.shape[0] / rate:.1f} s; the limit is {limits.max_audio_seconds:g} s")
    mono = samples.mean(axis=1)
    if not np.isfinite(mono).all():
        raise MediaError("audio contains NaN or infinite samples")
    return Audio(np.ascontiguousarray(mono, dtype=np.float32), int(rate))


def decode_text(text: str, limits: MediaLimits = DEFAULT_LIMITS) -> str:
    if not isinstance(text, str):
        raise MediaError(f"text must be a string, got {type(text).__name__}")
    if len(text) > limits.max_text_chars:
        raise MediaTooLargeError(f"text has {len(text)} characters; the limit is {limits.max_text_chars}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # JSON's "\ud800" escapes make these; tokenizers fail on them
        raise MediaError(
            f"text is not valid Unicode: lone surrogate {text[exc.start]!r} at character {exc.start}") from None
    return text


def load(modality: str, source: str | bytes, limits: MediaLimits = DEFAULT_LIMITS):
    """Text as is; image/audio from bytes or a file path."""
    if modality == "text":
        return decode_text(source, limits)  # type: ignore[arg-type]
    data = source if isinstance(source, bytes) else open(source, "rb").read()
    if modality == "image":
        return decode_image(data, limits)
    if modality == "audio":
        return decode_audio(data, limits)
    raise MediaError(f"unknown modality {modality!r}; valid: text, image, audio")
