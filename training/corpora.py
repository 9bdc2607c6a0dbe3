"""Real training pools made from system packages and shipped data: WordNet, espeak-ng speech, ImageNet names.

- WordNet (Debian `wordnet-base`): every noun synset of `data.noun` becomes one text line
  "lemma, lemma: gloss" (English definitions of ~82k concepts: a broad vocabulary beyond captions);
  `wordnet_lemmas` writes just the synonyms ("great white shark, white shark, man-eater") of the synsets
  of things a photo can show (animals, artifacts, foods, natural objects, plants: the ImageNet classes'
  own lexicographer files), without taxonomic groups ("genus Tinca") or Latin names: short noun phrases
  like the class names a 1,000-class query is made of.
- ImageNet-1k (the label set shipped for `/classify`): the 1,000 English class names, line i = class i
  (the classifier's class order, so posteriors index them), and their descriptions (prompt templates and
  WordNet glosses).
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


# noun.animal, noun.artifact, noun.food, noun.object, noun.plant (WordNet's lexicographer file numbers)
PICTURABLE = frozenset({"05", "06", "13", "17", "20"})
TAXON_WORDS = frozenset({"genus", "family", "order", "class", "subfamily", "suborder", "phylum", "subclass", "tribe",
                         "superfamily", "division", "subgenus", "subdivision", "superorder", "infraorder", "subphylum",
                         "superclass", "kingdom", "subkingdom"})


def parse_wordnet_lemmas(line: str) -> str | None:
    """One `data.noun` synset line -> "lemma, lemma" for a picturable synset that is not a taxon, else None.

    Capitalised lemmas of animals and plants are Latin names ("Carcharodon carcharias") and are left out.
    """
    if line.startswith("  ") or "|" not in line:
        return None
    parts = line.partition(" | ")[0].split()
    if parts[1] not in PICTURABLE:
        return None
    lemmas = [parts[4 + 2 * i].replace("_", " ").split("(")[0] for i in range(int(parts[3], 16))]
    if any(lemma.split()[0] in TAXON_WORDS for lemma in lemmas):
        return None
    if parts[1] in ("05", "20"):
        lemmas = [lemma for lemma in lemmas if not lemma[:1].isupper()]
    return ", ".join(dict.fromkeys(lemmas)) or None


def wordnet_lemmas(out: Path, source: Path = WORDNET_NOUNS) -> int:
    """Write the lemmas of every picturable noun synset to `out`, one synset a line; returns the lines."""
    return _write_lines(out, _wordnet_lines(source, parse_wordnet_lemmas), "WordNet lemma lines")


def imagenet_names(out: Path) -> int:
    """Write the 1,000 ImageNet class names the starter's prototypes embed, line i = class i."""
    from bonds.encoders.conse import imagenet_classnames

    return _write_lines(out, imagenet_classnames(), "ImageNet class names")


def imagenet_descriptions(out: Path) -> int:
    """Write the descriptions of the shipped ImageNet label set (five a class), one a line."""
    from bonds.classify import load_labelset

    return _write_lines(out, list(load_labelset("imagenet1k").descriptions), "ImageNet class descriptions")


def _wordnet_lines(source: Path, parse) -> list[str]:
    if not source.is_file():
        raise FileNotFoundError(f"{source} is missing; install the Debian package wordnet-base")
    return [g for g in (parse(raw) for raw in source.open(encoding="utf-8")) if g]


def _write_lines(out: Path, lines: list[str], what: str) -> int:
    """Write `lines` to `out` unless it already holds exactly them; returns the number of lines."""
    out = Path(out)
    text = "\n".join(lines) + "\n"
    if out.is_file() and out.read_text(encoding="utf-8") == text:
        return len(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    log.info("wrote %d %s to %s", len(lines), what, out)
    return len(lines)


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
