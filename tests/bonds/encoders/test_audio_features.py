"""Resampling any rate to the one an encoder reads: duration, frequency, anti-aliasing, bounded kernels."""

from __future__ import annotations

import numpy as np
import pytest

from bonds.encoders import audio_features
from bonds.encoders.audio_features import resample


@pytest.mark.parametrize("rate", [8000, 44100, 48000, 192000])
def test_resampling_keeps_duration_and_frequency(rate):
    t = np.arange(int(rate * 0.5)) / rate
    tone = np.sin(2 * np.pi * 440.0 * t).astype(np.float32)
    out = resample(tone, rate, 16000)
    assert len(out) == int(np.ceil(len(tone) * 16000 / rate))
    spectrum = np.abs(np.fft.rfft(out[400:-400]))
    peak_hz = np.argmax(spectrum) * 16000 / len(out[400:-400])
    assert abs(peak_hz - 440.0) < 5.0


@pytest.mark.parametrize("rate", [2003, 4001, 16001, 44101, 1000, 767_999])
@pytest.mark.parametrize("target", [16000, 48000])
def test_odd_rates_resample_with_bounded_kernels(rate, target, monkeypatch):
    """Issue 19, D5: 16001 -> 16000 Hz was a ratio of 16000/16001 in lowest terms, a kernel of 16000 x
    16013 taps (2 GB in float64; 4001 Hz took 3.3 GB and 10.6 s for one second). Both terms of the ratio are
    now at most 1000, so no kernel passes ~1000 x 1013 taps (4 MB) and no sample costs more than ~1000
    multiply-adds, whatever the rate; the ratio is within 0.05 % of the true one."""
    built = []
    real = audio_features._sinc_kernels.__wrapped__

    def kernels(orig, new, *args):
        assert max(orig, new) <= 1000, f"a {new} x {orig} kernel for {rate} -> {target} Hz"
        built.append(real(orig, new, *args))
        return built[-1]

    monkeypatch.setattr(audio_features, "_sinc_kernels", kernels)
    seconds = 0.25
    t = np.arange(int(rate * seconds)) / rate
    tone = np.sin(2 * np.pi * 440.0 * t).astype(np.float32)
    out = resample(tone, rate, target)
    exact = len(tone) * target / rate
    assert abs(len(out) - exact) <= exact * 5e-4 + 1
    assert all(k.numel() <= 1000 * 1013 for k, _ in built)
    spectrum = np.abs(np.fft.rfft(out[400:-400]))
    assert abs(np.argmax(spectrum) * target / len(out[400:-400]) - 440.0) < 5.0


def test_downsampling_removes_content_above_the_new_nyquist():
    rate = 48000
    t = np.arange(rate) / rate
    high = np.sin(2 * np.pi * 12000.0 * t).astype(np.float32)  # above 8 kHz: must not alias into the band
    out = resample(high, rate, 16000)
    assert np.sqrt(np.mean(out[500:-500] ** 2)) < 0.01
