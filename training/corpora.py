"""Real training pools made from system packages: WordNet glosses and espeak-ng speech.

- WordNet (Debian `wordnet-base`): every noun synset of `data.noun` becomes one text line
  "lemma, lemma: gloss" (English definitions of ~82k concepts: a broad vocabulary beyond captions).
- espeak-ng: English sentences read aloud into WAV files (22.05 kHz mono) plus a `manifest.jsonl` that keeps the
  text, so speech items exist for spaces with an audio route (the starter's Whisper) at no download.
Both are deterministic for a given package version, and both skip what is already written.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm.auto import tqdm

log = logging.getLogger(__name__)

WORDNET_NOUNS = Path("/usr/share/wordnet/data.noun")


def parse_wordnet_line(line: str) -> str | None:
    """One `data.noun` synset line -> "lemma, lemma: gloss" (None for the licence header)."""
    if line.startswith("  ") or "|" not in line:
        return None
    fields, _, gloss = line.partition(" | ")
    parts = fields.split()
    count = int(parts[3], 16)  # w_cnt is hexadecimal
    lemmas = [parts[4 + 2 * i].replace("_", " ") for i in range(count)]
    lemmas = [lemma.split("(")[0] for lemma in lemmas]  # adjective markers such as "(a)" only occur rarely
    return f"{', '.join(dict.fromkeys(lemmas))}: {gloss.strip()}"


def wordnet_glosses(out: Path, source: Path = WORDNET_NOUNS) -> int:
    """Write one line per noun synset to `out` (kept if present); returns the number of lines."""
    out = Path(out)
    if out.is_file():
        return sum(1 for _ in out.open(encoding="utf-8"))
    if not source.is_file():
        raise FileNotFoundError(f"{source} is missing; install the Debian package wordnet-base")
    lines = [g for g in (parse_wordnet_line(raw) for raw in source.open(encoding="utf-8")) if g]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(out)
    log.info("wrote %d WordNet noun glosses to %s", len(lines), out)
    return len(lines)


def synthesize_speech(texts: list[str], out_dir: Path, *, voice: str = "en-us", speed: int = 160,
                      workers: int = 2, progress: bool = True) -> Path:
    """Read each text aloud with espeak-ng into `out_dir/NNNNN.wav`; returns `out_dir/manifest.jsonl`.

    The manifest has {"audio": file, "text": text} per line, written last, so it marks a finished run.
    """
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise FileNotFoundError("espeak-ng is not installed (Debian package espeak-ng)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "manifest.jsonl"
    rows = [{"audio": f"{i:05d}.wav", "text": text} for i, text in enumerate(texts)]

    def speak(row: dict) -> None:
        wav = out_dir / row["audio"]
        if wav.is_file():
            return
        tmp = wav.with_suffix(".tmp.wav")
        subprocess.run([binary, "-v", voice, "-s", str(speed), "-w", str(tmp), row["text"]], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tmp.replace(wav)

    with ThreadPoolExecutor(max_workers=workers) as pool:  # espeak-ng runs as a subprocess: threads suffice
        list(tqdm(pool.map(speak, rows), total=len(rows), disable=not progress, desc="espeak-ng", unit="clip"))
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    log.info("synthesised %d speech clips in %s", len(rows), out_dir)
    return manifest
