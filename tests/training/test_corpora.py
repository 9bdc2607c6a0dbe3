"""WordNet glosses and espeak-ng speech: the real system packages the shipped bonds train on."""

from __future__ import annotations

import json
import shutil

import pytest

from bonds.media import load
from training.corpora import WORDNET_NOUNS, parse_wordnet_lemmas, parse_wordnet_line

DOG = ("02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 023 @ 02083346 n 0000 | a member of the genus Canis "
       '(probably descended from the common wolf); "the dog barked all night"  ')


def test_wordnet_line():
    assert parse_wordnet_line(DOG).startswith("dog, domestic dog, Canis familiaris: a member of the genus Canis")
    assert parse_wordnet_line("  1 This software and database is being provided") is None


def test_lemma_lines_keep_picturable_synsets_without_taxa_or_latin_names():
    assert parse_wordnet_lemmas(DOG) == "dog, domestic dog"
    genus = "01440655 05 n 02 Tinca 0 genus_Tinca 0 003 @ 01432517 n 0000 | tench  "
    feeling = "07516354 12 n 01 anger 0 001 @ 07516105 n 0000 | a strong emotion  "
    assert parse_wordnet_lemmas(genus) is None and parse_wordnet_lemmas(feeling) is None


def test_prepare_classes(cli, tmp_path):
    if not WORDNET_NOUNS.is_file():
        pytest.skip("wordnet-base is not installed")
    out = json.loads(cli("train", "prepare-classes", "--out", tmp_path).stdout.strip().splitlines()[-1])
    assert out["lines"]["imagenet_names"] == 1000 and out["lines"]["imagenet_descriptions"] > 4000
    names = (tmp_path / "imagenet_names.txt").read_text().splitlines()
    assert names[:2] == ["tench", "goldfish"]  # line i = class i of the classifier
    lemmas = (tmp_path / "wordnet_lemmas.txt").read_text().splitlines()
    assert len(lemmas) == out["lines"]["wordnet_lemmas"] > 20_000 and "dog, domestic dog" in lemmas


def test_prepare_wordnet(cli, tmp_path):
    if not WORDNET_NOUNS.is_file():
        pytest.skip("wordnet-base is not installed")
    cli("train", "prepare-wordnet", "--out", tmp_path / "glosses.txt")
    lines = (tmp_path / "glosses.txt").read_text().splitlines()
    assert len(lines) > 80_000 and any(line.startswith("dog, domestic dog") for line in lines)


def test_prepare_speech(cli, tmp_path):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    texts = tmp_path / "texts.txt"
    texts.write_text("A dog runs on the beach.\nTwo men play guitar.\n")
    out = cli("train", "prepare-speech", "--pool", f"t=text:{texts}", "--out", tmp_path / "speech", "--no-progress")
    rows = [json.loads(line) for line in (tmp_path / "speech" / "manifest.jsonl").read_text().splitlines()]
    assert json.loads(out.stdout.strip().splitlines()[-1])["clips"] == 2 and rows[1]["text"] == "Two men play guitar."
    audio = load("audio", str(tmp_path / "speech" / rows[0]["audio"]))
    assert 0.5 < audio.duration < 5
