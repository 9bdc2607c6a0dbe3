"""Stage 1, embed: encode pools in a space and write embedding shards.

Layout under the work folder (one folder per space and pool):

    embeddings/<space>/space.json                      what built the space (modalities, dim, spec)
    embeddings/<space>/<pool>/shard-00000.safetensors  `vectors` (n, dim) float32|float16
    embeddings/<space>/<pool>/shard-00000.json         ids of the rows, the pool spec, the space, the
                                                       rows it holds and the pool's total item count

A pool is cut into fixed-size shards by position, so the set of shards never depends on who computes
them: `--num-shards N --shard-index I` (or one Ray task per shard) computes every N-th shard, and a
shard already on disk is skipped. Each shard is written to a temp name and renamed, so an interrupted
run leaves no half shard and simply resumes. Reading checks that the shards cover the whole pool (a
missing last shard is an error, not a shorter pool).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from training.pools import Pool, PoolSpec, list_pool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpaceSpec:
    """How to build a space: an encoder registry name + options, or a description file."""

    name: str
    encoder: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "options": dict(self.options)}


def build_space(spec: SpaceSpec, device: str | None = None):
    """The `bonds.space.Space` a spec names; encoders come from the registry, never from a file."""
    from bonds.space import EncoderSpace

    if spec.description:
        from bonds.description import load_space

        return load_space(spec.description, device=device)
    if not spec.encoder:
        raise ValueError(f"space {spec.name!r}: give an encoder registry name or a description file")
    from bonds.encoders import create_encoder

    options = dict(spec.options)
    if device is not None and spec.encoder != "tiny":
        options.setdefault("device", device)
    check_encoder_options(spec.encoder, options)
    return EncoderSpace(create_encoder(spec.encoder, **options), name=spec.name)


def check_encoder_options(encoder: str, options: Mapping[str, Any]) -> None:
    """A ValueError naming the options an encoder does not take (instead of a TypeError from its constructor)."""
    import inspect

    from bonds.encoders import ENCODERS, list_encoders

    list_encoders()  # registers the optional encoders
    factory = ENCODERS.get(encoder)
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # no introspectable signature: let the encoder judge
        return
    try:
        signature.bind(**options)
    except TypeError as exc:
        takes = [n for n, p in signature.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        raise ValueError(f"encoder {encoder!r} does not take the options {dict(options)} ({exc}); "
                         f"its options are: {', '.join(takes) or '(none)'}") from None


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """`["dim=16", "role=query"]` -> {"dim": 16, "role": "query"} (JSON values where they parse)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"encoder option {pair!r} must look like KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def shard_path(folder: Path, index: int) -> Path:
    return folder / f"shard-{index:05d}.safetensors"


def pool_folder(workdir: Path, space: str, pool: str) -> Path:
    return Path(workdir) / "embeddings" / space / pool


def embed_shard(
    space, pool: Pool, folder: Path, index: int, shard_size: int, batch_size: int, dtype: str = "float32"
) -> int:
    """Encode one shard of a pool and write it atomically; returns the number of rows written."""
    from safetensors.numpy import save_file

    start, stop = index * shard_size, min((index + 1) * shard_size, len(pool))
    order = list(range(start, stop))
    if pool.spec.modality == "text":  # batches of similar length pad less; rows go back in pool order below
        order.sort(key=lambda i: len(pool.sources[i]))
    vectors = np.zeros((stop - start, space.dim), np.float32)
    for at in range(0, len(order), batch_size):
        batch = order[at : at + batch_size]
        vectors[np.asarray(batch, dtype=np.int64) - start] = space.embed(pool.spec.modality, pool.load(batch))
    folder.mkdir(parents=True, exist_ok=True)
    target = shard_path(folder, index)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    save_file({"vectors": vectors.astype(dtype)}, str(tmp))
    sidecar = {"ids": pool.ids[start:stop], "pool": pool.spec.to_string(), "space": space.name,
               "modality": pool.spec.modality, "start": start, "stop": stop, "total": len(pool)}
    target.with_suffix(".json").write_text(json.dumps(sidecar) + "\n")
    os.replace(tmp, target)  # the shard exists only once its ids do
    return stop - start


def shards_of(pool: Pool, shard_size: int, num_shards: int = 1, shard_index: int = 0) -> list[int]:
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(f"shard index {shard_index} is not in [0, {num_shards})")
    total = -(-len(pool) // shard_size)
    return [i for i in range(total) if i % num_shards == shard_index]


def write_space_info(workdir: Path, spec: SpaceSpec, space) -> None:
    folder = Path(workdir) / "embeddings" / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    info = {"spec": spec.to_dict(), "dim": int(space.dim), "modalities": list(space.modalities)}
    (folder / "space.json").write_text(json.dumps(info, indent=2) + "\n")


def read_space_info(workdir: Path, name: str) -> dict[str, Any]:
    path = Path(workdir) / "embeddings" / name / "space.json"
    if not path.is_file():
        raise FileNotFoundError(f"space {name!r} has not been embedded in {workdir} (no {path}); run `embed` first")
    return json.loads(path.read_text())


def embed_pools(
    workdir: Path,
    spec: SpaceSpec,
    pools: list[PoolSpec],
    *,
    shard_size: int = 8192,
    batch_size: int = 64,
    num_shards: int = 1,
    shard_index: int = 0,
    dtype: str = "float32",
    device: str | None = None,
    progress: bool = True,
    space=None,
) -> dict[str, int]:
    """Embed every pool whose modality the space has; returns rows written per pool (0: all on disk).

    The space (its models) is built only if some shard is missing, so a re-run over cached pools is cheap.
    """
    check_sizes(shard_size, batch_size)
    info = _space_info(workdir, spec, space, device)
    written: dict[str, int] = {}
    for pool_spec in pools:
        if pool_spec.modality not in info["modalities"]:
            log.info("space %s has no %s: pool %s is not embedded there", spec.name, pool_spec.modality, pool_spec.name)
            continue
        pool = list_pool(pool_spec)
        folder = pool_folder(workdir, spec.name, pool_spec.name)
        size = check_cached(folder, pool_spec, pool, shard_size)
        todo = [i for i in shards_of(pool, size, num_shards, shard_index) if not shard_path(folder, i).is_file()]
        written[pool_spec.name] = 0
        if todo and space is None:
            space = build_space(spec, device)
        bar = tqdm(total=sum(min(size, len(pool) - i * size) for i in todo), disable=not progress or not todo,
                   desc=f"embed {spec.name}/{pool_spec.name}", unit="item")
        for index in todo:
            n = embed_shard(space, pool, folder, index, size, batch_size, dtype)
            written[pool_spec.name] += n
            bar.update(n)
        bar.close()
        log.info("embedded %d of %d %s items of pool %s in %s", written[pool_spec.name], len(pool),
                 pool_spec.modality, pool_spec.name, spec.name)
    return written


def _space_info(workdir: Path, spec: SpaceSpec, space, device: str | None) -> dict[str, Any]:
    """space.json of this spec; written (building the space if not given) when missing or different."""
    path = Path(workdir) / "embeddings" / spec.name / "space.json"
    if path.is_file():
        info = json.loads(path.read_text())
        if info["spec"] == json.loads(json.dumps(spec.to_dict())):
            return info
        if any(path.parent.glob("*/shard-*.safetensors")):
            raise ValueError(f"{path.parent} holds embeddings of another space spec ({info['spec']}); "
                             "use another space name or remove the folder")
    space = space if space is not None else build_space(spec, device)
    write_space_info(workdir, spec, space)
    return read_space_info(workdir, spec.name)


def check_sizes(shard_size: int, batch_size: int) -> None:
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard size and batch size must be >= 1, got {shard_size} and {batch_size}")


def check_cached(folder: Path, pool_spec: PoolSpec, pool: Pool | None = None, shard_size: int = 8192) -> int:
    """Shards on disk must come from the same pool spec: same name, other data is an error, not a reuse.

    With `pool`, they must also hold as many items as the pool lists now. Returns the shard size to
    cut the pool with: the one its first shard was written with, if any (shards of two sizes would
    overlap or leave gaps), else `shard_size`.
    """
    first = shard_path(folder, 0).with_suffix(".json")
    if not first.is_file():
        return shard_size
    cached = json.loads(first.read_text())
    if cached["pool"] != pool_spec.to_string():
        raise ValueError(f"{folder} holds pool {cached['pool']!r}, not {pool_spec.to_string()!r}; "
                         "rename the pool or remove it")
    if pool is not None and cached.get("total", len(pool)) != len(pool):
        raise ValueError(f"{folder} was embedded when pool {pool_spec.name!r} had {cached['total']} items; it has "
                         f"{len(pool)} now (its files changed): remove {folder} and embed it again")
    written = cached["stop"] - cached["start"]
    if pool is not None and written != min(shard_size, len(pool)):
        log.info("%s was cut into shards of %d items; continuing with that size, not %d", folder, written, shard_size)
        return written
    return shard_size


def embed_pools_ray(workdir: Path, spec: SpaceSpec, pools: list[PoolSpec], *, shard_size: int = 8192,
                    batch_size: int = 64, dtype: str = "float32", device: str | None = None,
                    address: str | None = None, num_cpus_per_task: float = 1.0) -> dict[str, int]:
    """The same shards as `embed_pools`, one Ray task per missing shard, on a cluster or a local Ray.

    Each task builds its own space from the spec (encoders are not shipped between processes) and
    writes its shard to the shared work folder, so a killed job resumes like a local one.
    """
    import ray  # only this runner needs Ray

    check_sizes(shard_size, batch_size)
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    probe = build_space(spec, device)
    write_space_info(workdir, spec, probe)
    remote = ray.remote(num_cpus=num_cpus_per_task)(_ray_task)
    futures, expected = [], {}
    for pool_spec in pools:
        if pool_spec.modality not in probe.modalities:
            continue
        pool = list_pool(pool_spec)
        folder = pool_folder(workdir, spec.name, pool_spec.name)
        size = check_cached(folder, pool_spec, pool, shard_size)
        expected[pool_spec.name] = 0
        for index in shards_of(pool, size):
            if not shard_path(folder, index).is_file():
                futures.append(remote.remote(str(workdir), spec, pool_spec, index, size, batch_size, dtype, device))
    for name, n in ray.get(futures):
        expected[name] += n
    return expected


def _ray_task(workdir: str, spec: SpaceSpec, pool_spec: PoolSpec, index: int, shard_size: int, batch_size: int,
              dtype: str, device: str | None) -> tuple[str, int]:
    space = build_space(spec, device)
    pool = list_pool(pool_spec)
    folder = pool_folder(Path(workdir), spec.name, pool_spec.name)
    return pool_spec.name, embed_shard(space, pool, folder, index, shard_size, batch_size, dtype)


def load_embeddings(workdir: Path, space: str, pool: str) -> tuple[list[str], np.ndarray]:
    """All shards of a pool in a space, in order: (ids, (n, dim) float32). Missing shards are an error."""
    from safetensors.numpy import load_file

    folder = pool_folder(workdir, space, pool)
    files = sorted(folder.glob("shard-*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no embeddings of pool {pool!r} in space {space!r} under {folder}; run `embed` first")
    ids: list[str] = []
    chunks = []
    total = None
    for i, path in enumerate(files):
        if path != shard_path(folder, i):
            raise FileNotFoundError(f"{folder}: shard {i} is missing (found {path.name}); finish `embed` first")
        sidecar = json.loads(path.with_suffix(".json").read_text())
        continues = sidecar.get("start", len(ids)) == len(ids)
        if not continues or (total is not None and sidecar.get("total", total) != total):
            raise ValueError(f"{folder}: shard {i} does not continue the shards before it (other shard sizes or "
                             f"other data); remove {folder} and embed pool {pool!r} again")
        total = sidecar.get("total", total)
        ids.extend(sidecar["ids"])
        chunks.append(load_file(str(path))["vectors"].astype(np.float32))
    if total is not None and len(ids) < total:
        raise FileNotFoundError(f"{folder}: pool {pool!r} has {total} items but its shards hold {len(ids)} (shards "
                                f"from {len(files)} on are missing); finish `embed` first")
    return ids, np.concatenate(chunks)


def has_embeddings(workdir: Path, space: str, pool: str) -> bool:
    return shard_path(pool_folder(workdir, space, pool), 0).is_file()

