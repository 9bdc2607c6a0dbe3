"""Stage 2, pairs: FreeBind pseudo-pairs between a source and a target space.

An item of a modality both spaces embed pairs with itself. For a modality one space lacks, the
space that has it retrieves from a memory bank of an overlapping modality (embedded in both):

    w = softmax(q_s . M_s^T / tau_r)      tau_r = 1/100
    pseudo embedding in the other space = n(w . M_t)

with the same weights `w` in both spaces (`pseudo="both"` also adds the pair (n(w.M_s), n(w.M_t))).
A pool of a modality both spaces have but only one of them can read (text in languages the other space's
encoder does not know: `via_bank`) is embedded in that one only and paired the same way, through the bank.
Aggregates are L2-normalised because every encoder output the projector sees at inference is.

Memory stays bounded: the softmax runs over the top-k neighbours FAISS finds (IndexFlatIP, exact inner
products), queries go in blocks, so nothing of size queries x bank is ever built. The mass outside the
top k is exp(-(s_1 - s_k)/tau_r)-small at tau_r = 1/100; tests/training measures the truncation error.

Data modes: the pairs of each centre modality (A, T, V) form a pool, their unions the modes AT, AV, TV
and all of them `mix`. One projector head is trained per mode present (bonds.projector.FREEBIND_MODES).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from bonds.projector import FREEBIND_MODES
from bonds.vectors import l2_normalize
from training.embed import has_embeddings, load_embeddings, pool_folder, read_space_info

log = logging.getLogger(__name__)

CENTRES = {"audio": "A", "text": "T", "image": "V"}  # FreeBind's letters: V for vision
PSEUDO_CHOICES = ("own", "both")


@dataclass
class PairsConfig:
    source: str
    target: str
    pools: list[str]  # pool names already embedded (in one or both spaces)
    bank: list[str]  # pools of the overlapping modality used as the memory bank
    k: int = 64
    tau: float = 0.01
    block: int = 1024
    bank_limit: int | None = None
    pseudo: str = "own"
    modes: list[str] = field(default_factory=list)  # empty: every mode the data has
    conse: list[str] = field(default_factory=list)  # classified image pools (training.conse): image-centred pairs
    classes: str | None = None  # the class-name pool their posteriors index, embedded in both spaces
    retrieve: list[str] = field(default_factory=list)  # source pools paired through the class names (text ConSE)
    via_bank: list[str] = field(default_factory=list)  # pools embedded in one space only, paired through the bank

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        """A ValueError naming the first option out of range."""
        if self.pseudo not in PSEUDO_CHOICES:
            raise ValueError(f"pseudo must be one of {PSEUDO_CHOICES}, got {self.pseudo!r}")
        if self.k < 1:
            raise ValueError(f"k (neighbours per query) must be >= 1, got {self.k}")
        if not (math.isfinite(self.tau) and self.tau > 0):
            raise ValueError(f"tau (retrieval softmax temperature) must be a positive number, got {self.tau}; "
                             "FreeBind uses 0.01")
        if self.block < 1:
            raise ValueError(f"block (queries per retrieval block) must be >= 1, got {self.block}")
        if self.bank_limit is not None and self.bank_limit < 1:
            raise ValueError(f"bank limit must be >= 1 (or left out for the whole bank), got {self.bank_limit}")
        if not self.pools and not self.conse:
            raise ValueError("give at least one pool")
        if set(self.conse) & set(self.pools):
            raise ValueError(f"pools {sorted(set(self.conse) & set(self.pools))} are given both as embedded and as "
                             "classified pools; give the classified ones other names")
        for what, names in (("retrieved pools", self.retrieve), ("pools paired through the bank", self.via_bank)):
            missing = sorted(set(names) - set(self.pools))
            if missing:
                raise ValueError(f"{what} {missing} must also be given as pools")
        if set(self.via_bank) & set(self.retrieve):
            raise ValueError(f"pools {sorted(set(self.via_bank) & set(self.retrieve))} are paired both through the "
                             "bank (--via-bank) and through the class names (--retrieve); give each one way")
        if self.conse and not self.classes:
            raise ValueError("ConSE pairs need the class-name pool their posteriors index (--classes)")
        if self.retrieve and not self.classes:
            raise ValueError("pools paired through the class names (--retrieve) need the class-name pool (--classes)")


def topk_softmax(xq_nd: np.ndarray, index, k: int, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """Softmax weights over each query's top-k bank rows: (w (nq, k) float64, I (nq, k) int64)."""
    D_nk, I_nk = index.search(np.ascontiguousarray(xq_nd, dtype=np.float32), k)
    logits = D_nk.astype(np.float64) / tau
    logits -= logits.max(axis=1, keepdims=True)  # the top score is column 0; exp never overflows
    w_nk = np.exp(logits)
    w_nk /= w_nk.sum(axis=1, keepdims=True)
    return w_nk, I_nk


def retrieve(
    xq_nd: np.ndarray, xb_md: np.ndarray, banks: list[np.ndarray], *, k: int = 64, tau: float = 0.01,
    block: int = 1024, progress: bool = False,
) -> list[np.ndarray]:
    """For each query, `w . M` for every bank in `banks` (rows aligned with `xb_md`), one (nq, d) each.

    `w` is the top-k softmax of `xq . xb^T / tau` (`xq`, `xb` in the querying space). Not normalised.
    """
    import faiss

    if xq_nd.shape[1] != xb_md.shape[1]:
        raise ValueError(f"queries are {xq_nd.shape[1]}-d but the bank is {xb_md.shape[1]}-d")
    if any(len(b) != len(xb_md) for b in banks):
        raise ValueError("every bank must have one row per bank item")
    if len(xb_md) == 0:
        raise ValueError("the memory bank is empty")
    if k < 1 or block < 1 or not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"k and block must be >= 1 and tau > 0, got k={k}, block={block}, tau={tau}")
    k = min(k, len(xb_md))
    index = faiss.IndexFlatIP(xb_md.shape[1])
    index.add(np.ascontiguousarray(xb_md, dtype=np.float32))
    out = [np.zeros((len(xq_nd), b.shape[1]), np.float32) for b in banks]
    for at in tqdm(range(0, len(xq_nd), block), disable=not progress, desc="retrieve", unit="block"):
        w_nk, I_nk = topk_softmax(xq_nd[at : at + block], index, k, tau)
        for bank, agg in zip(banks, out, strict=True):
            agg[at : at + block] = np.einsum("nk,nkd->nd", w_nk, bank[I_nk].astype(np.float64))
    return out


def modes_for(centres: list[str], wanted: list[str] | None = None) -> dict[str, list[str]]:
    """Data mode -> the centre letters it unites. `mix` is everything; unions equal to mix are dropped."""
    present = [c for c in "ATV" if c in centres]
    modes: dict[str, list[str]] = {}
    for mode in FREEBIND_MODES:
        letters = present if mode == "mix" else list(mode)
        if any(c not in present for c in letters):
            continue
        if mode != "mix" and len(letters) == len(present) and len(present) > 0:
            continue  # the same data as mix: a second head would only cost weights
        modes[mode] = letters
    if wanted:
        unknown = [m for m in wanted if m not in modes]
        if unknown:
            raise ValueError(f"modes {unknown} have no data here; available: {', '.join(modes)}")
        modes = {m: modes[m] for m in wanted}
    return modes


def pool_string(workdir: Path, space: str, name: str) -> str:
    """The pool spec (`NAME=MODALITY:PATH?...`) a pool was embedded from in a space."""
    return json.loads((pool_folder(workdir, space, name) / "shard-00000.json").read_text())["pool"]


def load_both(workdir: Path, config: PairsConfig, name: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    """A pool's vectors in the source and the target space, checked to be the same items in the same order."""
    for space in (config.source, config.target):
        if not has_embeddings(workdir, space, name):
            raise FileNotFoundError(f"{what} {name!r} is not embedded in {space}; run `embed --space {space}` "
                                    "with that pool first")
    ids_s, src = load_embeddings(workdir, config.source, name)
    ids_t, tgt = load_embeddings(workdir, config.target, name)
    spec_s, spec_t = pool_string(workdir, config.source, name), pool_string(workdir, config.target, name)
    if spec_s != spec_t or ids_s != ids_t:
        differs = f"from {spec_s!r} and {spec_t!r}" if spec_s != spec_t else "with other items"
        raise ValueError(f"{what} {name!r} was embedded {differs} in {config.source} and {config.target}: its rows "
                         "must be the same items in both spaces; embed the same pool (same path and slice) in both")
    return src, tgt


def _banks(workdir: Path, config: PairsConfig) -> dict[str, np.ndarray]:
    """The memory bank in each space (rows checked to be the same items), cut to `bank_limit` rows."""
    chunks = [load_both(workdir, config, name, "bank pool") for name in config.bank]
    banks = {config.source: np.concatenate([s for s, _ in chunks]),
             config.target: np.concatenate([t for _, t in chunks])}
    return {space: bank[: config.bank_limit] if config.bank_limit else bank for space, bank in banks.items()}


def pool_modality(workdir: Path, config: PairsConfig, name: str) -> str:
    """A pool's modality, from the first shard written for it in either space."""
    for space in (config.source, config.target):
        sidecar = pool_folder(workdir, space, name) / "shard-00000.json"
        if sidecar.is_file():
            return json.loads(sidecar.read_text())["modality"]
    raise FileNotFoundError(
        f"pool {name!r} is embedded in neither {config.source} nor {config.target}; run `embed` first")


def build_pairs(workdir: Path, config: PairsConfig, *, progress: bool = True) -> dict:
    """Write `pairs/<centre>.safetensors` (`source`, `target`) and `pairs/summary.json`; returns the summary.

    Centres already written with the same config are kept (resumable); the summary says what was used.
    """
    from safetensors.numpy import save_file

    config.validate()
    workdir = Path(workdir)
    out = workdir / "pairs"
    out.mkdir(parents=True, exist_ok=True)
    spaces = {side: read_space_info(workdir, name)
              for side, name in (("source", config.source), ("target", config.target))}
    stamp = json.dumps(config.to_dict(), sort_keys=True)
    by_centre: dict[str, list[str]] = {}
    for name in config.pools:
        by_centre.setdefault(pool_modality(workdir, config, name), []).append(name)
    if config.conse:
        by_centre.setdefault("image", []).extend(config.conse)
    banks: dict[str, np.ndarray] = {}
    summary = {"config": config.to_dict(), "centres": {}, "source_dim": spaces["source"]["dim"],
               "target_dim": spaces["target"]["dim"]}
    for modality, names in by_centre.items():
        letter = CENTRES[modality]
        path = out / f"{letter}.safetensors"
        done = out / f"{letter}.json"
        if path.is_file() and done.is_file() and json.loads(done.read_text()).get("stamp") == stamp:
            summary["centres"][letter] = json.loads(done.read_text())["summary"]
            log.info("pairs for centre %s already built; kept", letter)
            continue
        started = time.perf_counter()
        src_parts, tgt_parts, counts = [], [], {}
        for name in names:
            src, tgt = _pairs_of_pool(workdir, config, name, modality, spaces, banks, progress)
            src_parts.append(src)
            tgt_parts.append(tgt)
            counts[name] = len(src)
        source, target = np.concatenate(src_parts), np.concatenate(tgt_parts)
        seconds = time.perf_counter() - started
        save_file({"source": source, "target": target}, str(path))
        info = {"modality": modality, "pairs": len(source), "pools": counts, "seconds": round(seconds, 3),
                "pairs_per_second": round(len(source) / max(seconds, 1e-9), 1)}
        done.write_text(json.dumps({"stamp": stamp, "summary": info}) + "\n")
        summary["centres"][letter] = info
        log.info("centre %s: %d pairs in %.1f s (%.0f pairs/s)", letter, len(source), seconds, info["pairs_per_second"])
    summary["modes"] = {m: letters for m, letters in modes_for(list(summary["centres"]), config.modes).items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _pairs_of_pool(workdir, config, name, modality, spaces, banks, progress) -> tuple[np.ndarray, np.ndarray]:
    if name in config.conse:  # a classified pool: its ConSE over the class names in both spaces
        from training.conse import conse_pairs

        return conse_pairs(workdir, name, *load_both(workdir, config, config.classes, "class-name pool"))
    if name in config.retrieve:  # the source's softmax over the class names gives the target's mixture of them
        return _through_classes(workdir, config, name, progress)
    has_s, has_t = (modality in spaces[side]["modalities"] for side in ("source", "target"))
    if name in config.via_bank:  # only one space reads it (say German text and an English encoder)
        has_s, has_t = (has_embeddings(workdir, space, name) for space in (config.source, config.target))
        if has_s == has_t:
            where = "both spaces" if has_s else "neither space"
            raise ValueError(f"pool {name!r} is paired through the bank (--via-bank), so it must be embedded in the "
                             f"one space that reads it; it is embedded in {where}")
    elif has_s and has_t:  # the same item in both spaces; it must be embedded in both
        missing = [space for space in (config.source, config.target) if not has_embeddings(workdir, space, name)]
        if len(missing) == 1:
            raise ValueError(f"pool {name!r} ({modality}) is not embedded in {missing[0]}, which also embeds "
                             f"{modality}: its pairs are the same item in both spaces; run `embed --space "
                             f"{missing[0]}` with that pool first")
        return load_both(workdir, config, name, "pool")
    in_source = has_s and has_embeddings(workdir, config.source, name)
    in_target = has_t and has_embeddings(workdir, config.target, name)
    if not (in_source or in_target):
        raise ValueError(f"pool {name!r} ({modality}) is embedded in neither {config.source} nor {config.target}")
    if not config.bank:
        raise ValueError(f"pool {name!r} ({modality}) is embedded only in "
                         f"{config.source if in_source else config.target}: its pairs come from retrieval, which "
                         "needs a memory bank; add --bank POOL (a pool of a modality both spaces embed, embedded in "
                         "both)")
    querying = config.source if in_source else config.target
    _, xq = load_embeddings(workdir, querying, name)
    if not banks:
        banks.update(_banks(workdir, config))
    own_bank = banks[querying]
    agg_s, agg_t = (l2_normalize(a) for a in retrieve(
        xq, own_bank, [banks[config.source], banks[config.target]], k=config.k, tau=config.tau, block=config.block,
        progress=progress))
    src, tgt = (xq, agg_t) if in_source else (agg_s, xq)
    if config.pseudo == "both":
        return np.concatenate([src, agg_s]), np.concatenate([tgt, agg_t])
    return src, tgt


def _through_classes(workdir, config, name, progress) -> tuple[np.ndarray, np.ndarray]:
    """(x, n(w . C_target)), `w` the top-k softmax of `x . C_source^T / tau` over the class names: text ConSE.

    A photo's starter vector is its classifier's mixture of class names; a text pool paired this way teaches
    the projector the same snap onto the nearest names in the source, in the target's coordinates, which is
    what a query in any language needs to land on the right photos (its own target embedding would not)."""
    if not has_embeddings(workdir, config.source, name):
        raise FileNotFoundError(f"pool {name!r} is paired through the class names from {config.source}, where it "
                                f"is not embedded; run `embed --space {config.source}` with that pool first")
    _, xq = load_embeddings(workdir, config.source, name)
    classes_s, classes_t = load_both(workdir, config, config.classes, "class-name pool")
    (agg,) = retrieve(xq, classes_s, [classes_t], k=config.k, tau=config.tau, block=config.block, progress=progress)
    return xq, l2_normalize(agg)


def load_pairs(workdir: Path) -> tuple[dict, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """(summary, centre letter -> (source (n, d_s), target (n, d_t)) float32)."""
    from safetensors.numpy import load_file

    out = Path(workdir) / "pairs"
    summary_path = out / "summary.json"
    if not summary_path.is_file():
        raise FileNotFoundError(f"no pairs in {out}; run `pairs` first")
    summary = json.loads(summary_path.read_text())
    centres = {}
    for letter in summary["centres"]:
        tensors = load_file(str(out / f"{letter}.safetensors"))
        centres[letter] = (tensors["source"].astype(np.float32), tensors["target"].astype(np.float32))
    return summary, centres
