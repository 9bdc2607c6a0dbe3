"""Build the shipped label sets: ImageNet-1k class names with WordNet-gloss descriptions (UniBind-style).

    python scripts/build_labelsets.py            # writes bonds/data/labelsets/imagenet1k.json

UniBind gives every class many descriptions from a knowledge base; offline, WordNet 3.0 (Debian
`wordnet-base`) is that knowledge base. The class-name file has no wnids, so each name is looked up as a
noun lemma: the most frequent sense that is not an instance (no people or places: "crane" is the
machine or the bird, never Stephen Crane), preferring a sense whose gloss or hypernyms share words with
a qualifier ("kite (bird of prey)", "crane bird"). Names WordNet lacks fall back to their head noun.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import typer

REPO = Path(__file__).resolve().parents[1]
NAMES = REPO.parent / "shared" / "data" / "text" / "imagenet-classnames" / "en_classnames.json"
OUT = REPO / "bonds" / "data" / "labelsets"
WORDNET = Path("/usr/share/wordnet")
# Four of CLIP's 80 ImageNet prompt templates: the plain one and three that vary the rendering.
TEMPLATES = ("a photo of a {}.", "a close-up photo of the {}.", "a drawing of a {}.", "a blurry photo of a {}.")
WORD = re.compile(r"[a-z]+")

log = logging.getLogger("build_labelsets")


# WordNet lexicographer files of things a photo can show: animals, artifacts, foods, objects, plants.
PICTURABLE = {"05", "06", "13", "17", "20"}
STOPWORDS = {"a", "an", "and", "the", "of", "or", "in", "on", "for", "to", "with", "by", "as", "at", "from", "its"}


class WordNet:
    """Just enough of WordNet's database files: noun lemma -> senses with synonyms, gloss, hypernyms."""

    def __init__(self, folder: Path):
        self.index: dict[str, list[str]] = {}
        for line in (folder / "index.noun").read_text(encoding="latin-1").splitlines():
            if line.startswith(" "):
                continue  # licence header
            fields = line.split()
            n_synsets, n_pointers = int(fields[2]), int(fields[3])
            self.index[fields[0]] = fields[6 + n_pointers: 6 + n_pointers + n_synsets]
        self.data: dict[str, tuple[list[str], bool, list[str], str, str]] = {}
        for line in (folder / "data.noun").read_text(encoding="latin-1").splitlines():
            if line.startswith(" "):
                continue
            head, _, gloss = line.partition(" | ")
            fields = head.split()
            n_words = int(fields[3], 16)
            words = [w.replace("_", " ") for w in fields[4: 4 + 2 * n_words: 2]]
            at = 4 + 2 * n_words
            pointers = [fields[at + 1 + 4 * i: at + 5 + 4 * i] for i in range(int(fields[at]))]
            hypernyms = [p[1] for p in pointers if p[0] == "@"]
            instance = any(p[0] == "@i" for p in pointers)
            self.data[fields[0]] = (words, instance, hypernyms, gloss.strip(), fields[1])

    def senses(self, lemma: str) -> list[tuple[str, str]]:
        """Non-instance senses of a noun lemma: (text to match against, gloss).

        Picturable senses come first ("thimble" the cap, not "as much as a thimble will hold"), each
        group most frequent first.

        The match text is the sense's synonyms and gloss plus its hypernyms' (a kite is a *hawk*,
        "diurnal bird of prey"), so a qualifier can pick the sense.
        """
        key = lemma.strip().lower().replace(" ", "_")
        out = []
        for offset in self.index.get(key, []):
            words, instance, hypernyms, gloss, lexfile = self.data[offset]
            if instance:
                continue
            text = [" ".join(words), gloss] + [" ".join(self.data[h][0]) + " " + self.data[h][3] for h in hypernyms]
            out.append((lexfile not in PICTURABLE, " ".join(text).lower(), gloss))
        out.sort(key=lambda sense: sense[0])  # stable: frequency order within each group
        return [(text, gloss) for _, text, gloss in out]


def content_words(text: str) -> set[str]:
    return set(WORD.findall(text.lower())) - STOPWORDS


def short_gloss(gloss: str) -> str:
    """The definition part of a gloss, without its quoted examples ("...; 'a dog barked'")."""
    parts = [p.strip() for p in gloss.split(";") if p.strip() and not p.strip().startswith('"')]
    return "; ".join(parts).rstrip(".")


def best_sense(senses: list[tuple[str, str]], qualifier: set[str]) -> tuple[int, str]:
    """(overlap with the qualifier, gloss) of the best-matching sense; ties go to the more frequent."""
    scored = [(len(qualifier & content_words(text)), -i, gloss) for i, (text, gloss) in enumerate(senses)]
    overlap, _, gloss = max(scored)
    return overlap, gloss


def describe(name: str, wordnet: WordNet) -> tuple[list[str], str]:
    """Descriptions of one class and how its gloss was found ("exact", "word", "head", "none")."""
    main, _, qualifier = name.partition("(")
    descriptions = [template.format(name) for template in TEMPLATES]
    # 1. The whole name (or one of its "a / b" alternatives) is a WordNet lemma.
    for lemma in [name, main.strip()] + [p for p in re.split(r"\s*/\s*", main.strip()) if p]:
        senses = wordnet.senses(lemma)
        if senses:
            descriptions.append(f"{name}: {short_gloss(best_sense(senses, content_words(qualifier))[1])}.")
            return descriptions, "exact"
    # 2. One word of it is, in a sense that the other words confirm ("crane bird": crane, a wading bird).
    words = main.replace("/", " ").split()
    candidates = []
    for i, word in enumerate(words):
        senses = wordnet.senses(word)
        if senses:
            rest = content_words(" ".join(words[:i] + words[i + 1:]) + " " + qualifier) - {word.lower()}
            overlap, gloss = best_sense(senses, rest)
            candidates.append((overlap, i, gloss))
    if candidates and max(candidates)[0] > 0:
        descriptions.append(f"{name}: {short_gloss(max(candidates)[2])}.")
        return descriptions, "word"
    # 3. Its head noun, said as such.
    head = words[-1] if words else ""
    senses = wordnet.senses(head)
    if senses:
        descriptions.append(f"{name}, a kind of {head}: {short_gloss(senses[0][1])}.")
        return descriptions, "head"
    return descriptions, "none"


def main(
    names_file: Path = typer.Option(NAMES, "--names", envvar="FREEBIND_LABELSET_NAMES",
                                    help="CLIP_benchmark class-name JSON (key imagenet1k)"),
    wordnet_dir: Path = typer.Option(WORDNET, "--wordnet", envvar="FREEBIND_LABELSET_WORDNET",
                                     help="folder with WordNet's index.noun and data.noun"),
    out_dir: Path = typer.Option(OUT, "--out", envvar="FREEBIND_LABELSET_OUT", help="where the label-set JSON goes"),
) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    wordnet = WordNet(wordnet_dir)
    names = json.loads(names_file.read_text())["imagenet1k"]
    entries, how = [], {"exact": 0, "word": 0, "head": 0, "none": 0}
    for name in names:
        descriptions, found = describe(name, wordnet)
        how[found] += 1
        entries.append({"label": name, "descriptions": descriptions})
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "imagenet1k.json"
    path.write_text(json.dumps(entries, indent=0, ensure_ascii=False) + "\n", encoding="utf-8")
    log.info("wrote %s: %d classes; gloss by whole name %d, by a confirmed word %d, by head noun %d, none %d",
             path, len(entries), how["exact"], how["word"], how["head"], how["none"])


if __name__ == "__main__":
    typer.run(main)
