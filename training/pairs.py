"""Stage 2, pairs: FreeBind pseudo-pairs between a source and a target space.

An item of a modality both spaces embed pairs with itself. For a modality one space lacks, the
space that has it retrieves from a memory bank of an overlapping modality (embedded in both):

    w = softmax(q_s . M_s^T / tau_r)      tau_r = 1/100
    pseudo embedding in the other space = n(w . M_t)

with the same weights `w` in both spaces (`pseudo="both"` also adds the pair (n(w.M_s), n(w.M_t))).
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
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from bonds.projector import FREEBIND_MODES
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

    def to_dict(self) -> dict:
        return asdict(self)


def normalize_rows(x_nd: np.ndarray) -> np.ndarray:
    return (x_nd / np.maximum(np.linalg.norm(x_nd, axis=1, keepdims=True), 1e-12)).astype(np.float32)


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


def _bank(workdir: Path, space: str, config: PairsConfig) -> np.ndarray:
    chunks = [load_embeddings(workdir, space, name)[1] for name in config.bank]
    bank = np.concatenate(chunks)
    return bank[: config.bank_limit] if config.bank_limit else bank


def pool_modality(workdir: Path, config: PairsConfig, name: str) -> str:
    """A pool's modality, from the first shard written for it in either space."""
    for space in (config.source, config.target):
        sidecar = pool_folder(workdir, space, name) / "shard-00000.json"
        if sidecar.is_file():
            return json.loads(sidecar.read_text())["modality"]
    raise FileNotFoundError(f"pool {name!r} is embedded in neither {config.source} nor {config.target}; run `embed` first")


def build_pairs(workdir: Path, config: PairsConfig, *, progress: bool = True) -> dict:
    """Write `pairs/<centre>.safetensors` (`source`, `target`) and `pairs/summary.json`; returns the summary.

    Centres already written with the same config are kept (resumable); the summary says what was used.
    """
    from safetensors.numpy import save_file

    if config.pseudo not in PSEUDO_CHOICES:
        raise ValueError(f"pseudo must be one of {PSEUDO_CHOICES}, got {config.pseudo!r}")
    workdir = Path(workdir)
    out = workdir / "pairs"
    out.mkdir(parents=True, exist_ok=True)
    spaces = {side: read_space_info(workdir, name) for side, name in (("source", config.source), ("target", config.target))}
    stamp = json.dumps(config.to_dict(), sort_keys=True)
    by_centre: dict[str, list[str]] = {}
    for name in config.pools:
        by_centre.setdefault(pool_modality(workdir, config, name), []).append(name)
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
    in_source = modality in spaces["source"]["modalities"] and has_embeddings(workdir, config.source, name)
    in_target = modality in spaces["target"]["modalities"] and has_embeddings(workdir, config.target, name)
    if in_source and in_target:  # the same item in both spaces
        ids_s, src = load_embeddings(workdir, config.source, name)
        ids_t, tgt = load_embeddings(workdir, config.target, name)
        if ids_s != ids_t:
            raise ValueError(f"pool {name!r} was embedded with different items in {config.source} and {config.target}")
        return src, tgt
    if not (in_source or in_target):
        raise ValueError(f"pool {name!r} ({modality}) is embedded in neither {config.source} nor {config.target}")
    querying = config.source if in_source else config.target
    _, xq = load_embeddings(workdir, querying, name)
    for side in (config.source, config.target):
        if side not in banks:
            banks[side] = _bank(workdir, side, config)
    own_bank = banks[querying]
    agg_s, agg_t = (normalize_rows(a) for a in retrieve(
        xq, own_bank, [banks[config.source], banks[config.target]], k=config.k, tau=config.tau, block=config.block,
        progress=progress))
    src, tgt = (xq, agg_t) if in_source else (agg_s, xq)
    if config.pseudo == "both":
        return np.concatenate([src, agg_s]), np.concatenate([tgt, agg_t])
    return src, tgt


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
