"""Audio features: band-limited resampling of any rate to the one an encoder reads, and ImageBind's audio
input, three 2 s clips of a 16 kHz waveform, each a normalised 128 x 204 Kaldi fbank.

The official pipeline uses `torchaudio.compliance.kaldi.fbank` and pytorchvideo's clip sampler; neither is a
dependency here, so both are re-implemented in plain torch with the same arithmetic (float32, the same
mel-bank formula, snip-edges framing), and the tests compare them with an independent numpy version.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

import numpy as np
import torch

from bonds.encoders.base import Audio

SAMPLE_RATE = 16_000
CLIP_SECONDS = 2
CLIPS = 3
MEL_BINS = 128
TARGET_FRAMES = 204
FBANK_MEAN = -4.268  # dataset statistics the checkpoint was trained with: (fbank - mean) / std
FBANK_STD = 9.138
_EPSILON = torch.finfo(torch.float32).eps  # Kaldi's floor before the log


# Rational resampling orig -> new runs new/orig as new' / orig' in lowest terms, with a kernel of new' x
# (orig' + 2 * width) taps and new' multiply-adds per input sample. Every common pair is small (44.1 -> 16
# kHz is 160/441, 48 -> 16 is 1/3); an odd rate is not: 16001 -> 16000 Hz was 16000/16001, a 2 GB kernel
# (4001 Hz: 3.3 GB and 10.6 s for one second of audio). So both terms are held to RATIO_TERMS, which
# bounds a kernel to ~4 MB and the work to ~1000 multiply-adds per sample whatever the rates.
RATIO_TERMS = 1000


def rational_ratio(orig_rate: int, new_rate: int) -> tuple[int, int]:
    """`(orig, new)` with new / orig = new_rate / orig_rate, both at most RATIO_TERMS: exact when the
    reduced terms are that small, else the closest such fraction (relative error under 1e-4: 16001 Hz is
    read as 16000 Hz, a pitch and tempo change of 0.006 %, far below what any audio encoder resolves)."""
    exact = Fraction(int(new_rate), int(orig_rate))
    if max(exact.numerator, exact.denominator) <= RATIO_TERMS:
        return exact.denominator, exact.numerator
    if not 1 / RATIO_TERMS <= exact <= RATIO_TERMS:
        raise ValueError(f"cannot resample {orig_rate} Hz to {new_rate} Hz: a ratio beyond 1:{RATIO_TERMS}")
    near = exact.limit_denominator(RATIO_TERMS) if exact <= 1 else 1 / (1 / exact).limit_denominator(RATIO_TERMS)
    return near.denominator, near.numerator


@lru_cache(maxsize=16)  # at most ~4 MB each (RATIO_TERMS): 64 MB however many odd rates arrive
def _sinc_kernels(orig: int, new: int, width_zeros: int = 6, rolloff: float = 0.99):
    """Hann-windowed sinc low-pass kernels for rational resampling orig -> new (both reduced)."""
    base_freq = min(orig, new) * rolloff
    width = math.ceil(width_zeros * orig / base_freq)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=torch.float64)[:, None, None] / new + idx
    t = (t * base_freq).clamp(-width_zeros, width_zeros)
    window = torch.cos(t * math.pi / width_zeros / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / torch.where(t == 0, torch.ones_like(t), t))
    return (sinc * window * (base_freq / orig)).to(torch.float32), width


def resample(samples: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Band-limited resampling (windowed sinc, anti-aliased when downsampling) of a mono waveform; the
    ratio as `rational_ratio` gives it, so memory and time stay bounded for any pair of rates."""
    orig, new = rational_ratio(orig_rate, new_rate)
    if orig == new:
        return np.asarray(samples, dtype=np.float32)
    kernels, width = _sinc_kernels(orig, new)
    wave = torch.as_tensor(np.asarray(samples, dtype=np.float32))[None, None]
    length = wave.shape[-1]
    wave = torch.nn.functional.pad(wave, (width, width + orig))
    out = torch.nn.functional.conv1d(wave, kernels, stride=orig)  # (1, new, frames)
    out = out.transpose(1, 2).reshape(-1)
    target = math.ceil(new * length / orig)
    return out[:target].numpy().astype(np.float32, copy=False)


def resample_audio(audio: Audio, rate: int) -> Audio:
    return Audio(resample(audio.samples, audio.sample_rate, rate), rate)


def _mel(freq):
    if isinstance(freq, torch.Tensor):
        return 1127.0 * torch.log(1.0 + freq / 700.0)
    return 1127.0 * math.log(1.0 + freq / 700.0)


@lru_cache(maxsize=8)
def mel_banks(num_bins: int, padded_window: int, sample_rate: float, low_freq: float = 20.0,
              high_freq: float = 0.0) -> torch.Tensor:
    """Kaldi triangular filters, equally spaced on the mel scale: (num_bins, padded_window // 2 + 1).

    `high_freq <= 0` counts back from Nyquist (Kaldi's convention). The last column (the Nyquist bin) is
    zero, as in Kaldi, which builds the bank over the first padded_window / 2 FFT bins only.
    """
    nyquist = 0.5 * sample_rate
    high = high_freq + nyquist if high_freq <= 0.0 else high_freq
    mel_low, mel_high = _mel(low_freq), _mel(high)
    delta = (mel_high - mel_low) / (num_bins + 1)
    index = torch.arange(num_bins, dtype=torch.float32).unsqueeze(1)
    left, center, right = (mel_low + (index + k) * delta for k in (0.0, 1.0, 2.0))
    bin_mel = _mel(sample_rate / padded_window * torch.arange(padded_window // 2, dtype=torch.float32)).unsqueeze(0)
    rising = (bin_mel - left) / (center - left)
    falling = (right - bin_mel) / (right - center)
    banks = torch.clamp(torch.minimum(rising, falling), min=0.0)
    return torch.nn.functional.pad(banks, (0, 1))


def kaldi_fbank(wave: torch.Tensor, sample_rate: int = SAMPLE_RATE, num_mel_bins: int = MEL_BINS,
                frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0, preemphasis: float = 0.97) -> torch.Tensor:
    """Log mel filterbank energies (frames, num_mel_bins) of a 1-D waveform, as `kaldi.fbank` computes them
    with ImageBind's settings: hanning window, dither 0, DC offset removed per frame, pre-emphasis 0.97,
    power spectrum over an FFT rounded up to a power of two, snip_edges framing, no energy column (so
    htk_compat changes nothing), mel bins from 20 Hz to Nyquist."""
    wave = wave.to(torch.float32).contiguous()
    size = int(sample_rate * frame_length_ms * 0.001)
    shift = int(sample_rate * frame_shift_ms * 0.001)
    padded = 1 << (size - 1).bit_length()
    if wave.numel() < size:  # Kaldi asserts here; an empty fbank is padded to silence-level features later
        return torch.zeros(0, num_mel_bins)
    count = 1 + (wave.numel() - size) // shift  # snip_edges: only frames that fit entirely
    frames = wave.as_strided((count, size), (shift, 1))
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)  # x[j-1], with x[-1] := x[0]
    frames = frames - preemphasis * previous
    frames = frames * torch.hann_window(size, periodic=False, dtype=torch.float32)
    frames = torch.nn.functional.pad(frames, (0, padded - size))
    power = torch.fft.rfft(frames).abs().pow(2.0)
    energies = power @ mel_banks(num_mel_bins, padded, float(sample_rate)).T
    return torch.clamp(energies, min=_EPSILON).log()


def clip_bounds(num_samples: int, sample_rate: int = SAMPLE_RATE, clip_seconds: int = CLIP_SECONDS,
                clips: int = CLIPS) -> list[tuple[int, int]]:
    """Sample ranges of pytorchvideo's `ConstantClipsPerVideoSampler`, as ImageBind calls it.

    Clip k starts at k * (duration - clip) / clips (exact fractions). The divisor is `clips`, not
    `clips - 1`, so the last clip ends (duration - clip) / clips before the end of the file; audio shorter
    than a clip gives three identical clips from 0.
    """
    # float duration minus the clip length, then exact fractions: the same rounding as the official code
    step = Fraction(max(num_samples / sample_rate - clip_seconds, 0)) / clips
    return [(int(k * step * sample_rate), int((k * step + clip_seconds) * sample_rate)) for k in range(clips)]


def fbank_clip(wave: torch.Tensor, sample_rate: int = SAMPLE_RATE, num_mel_bins: int = MEL_BINS,
               target_frames: int = TARGET_FRAMES) -> torch.Tensor:
    """One clip, its mean already removed -> (1, mel, target_frames): fbank transposed, zero-padded or cut
    (zeros before normalising, as the official code pads), then normalised with the training statistics."""
    fbank = kaldi_fbank(wave, sample_rate, num_mel_bins).T
    missing = target_frames - fbank.shape[1]
    fbank = torch.nn.functional.pad(fbank, (0, missing)) if missing > 0 else fbank[:, :target_frames]
    return ((fbank - FBANK_MEAN) / FBANK_STD).unsqueeze(0)


def imagebind_audio_clips(audio: Audio, clips: int = CLIPS) -> torch.Tensor:
    """Decoded audio -> (clips, 1, 128, 204) model input, resampled to 16 kHz with `resample`."""
    samples = resample(np.asarray(audio.samples, dtype=np.float32), audio.sample_rate, SAMPLE_RATE)
    wave = torch.from_numpy(np.array(samples, dtype=np.float32))  # a private copy: it is edited in place below
    out = []
    for start, end in clip_bounds(wave.numel(), clips=clips):
        view = wave[start:end]
        # The official code subtracts each clip's mean in place on a view of the whole waveform, so a clip
        # that overlaps an earlier one sees that one's mean removed too; we do the same to match its numbers.
        view -= view.mean()
        out.append(fbank_clip(view))
    return torch.stack(out)
