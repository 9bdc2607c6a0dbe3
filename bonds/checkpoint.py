"""Bond checkpoints: a folder with `weights.safetensors` and `manifest.json`. Never pickles.

The manifest records the format version, bond kind, source and target spaces (ids and dims), the
modalities, the projector config, the training config and data summary, the library version and the
sha256 of the weights file. Loading verifies all of it and says exactly what does not fit.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bonds.errors import CheckpointError, DimensionError
from bonds.projector import ProjectorConfig, ProjectorMixture
from bonds.version import library_version

FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
MANIFEST_FILE = "manifest.json"
BOND_KINDS = ("displacement", "combination")


@dataclass
class Manifest:
    kind: str
    source: dict[str, Any]  # {"id": space or encoder name, "dim": int}
    target: dict[str, Any]
    modalities: list[str]
    projector: dict[str, Any]
    training: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    weights_sha256: str = ""
    weights_dtype: str = "float32"
    library_version: str = ""
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_bond_checkpoint(
    folder: str | Path,
    projector: ProjectorMixture,
    *,
    kind: str,
    source: dict[str, Any],
    target: dict[str, Any],
    modalities: list[str],
    training: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    dtype: str = "float32",
) -> Manifest:
    """Write the folder atomically (temp dir + rename), so a crash never leaves half a checkpoint."""
    from safetensors.torch import save_file

    if kind not in BOND_KINDS:
        raise CheckpointError(f"unknown bond kind {kind!r}; valid: {', '.join(BOND_KINDS)}")
    if dtype not in ("float32", "float16", "bfloat16"):
        raise CheckpointError(f"unsupported weights dtype {dtype!r}; use float32, float16 or bfloat16")
    if int(source["dim"]) != projector.d_in or int(target["dim"]) != projector.d_out:
        raise DimensionError(
            f"projector maps {projector.d_in}->{projector.d_out} but source/target dims are "
            f"{source['dim']}->{target['dim']}"
        )
    folder = Path(folder).resolve()  # "." has no name to stage beside
    _check_replaceable(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    cast = getattr(torch, dtype)
    tensors = {
        k: (v.to(cast) if v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in projector.state_dict().items()
    }
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        save_file(tensors, str(staging / WEIGHTS_FILE))
        manifest = Manifest(
            kind=kind, source=dict(source), target=dict(target), modalities=list(modalities),
            projector=projector.config.to_dict(), training=dict(training or {}), data=dict(data or {}),
            weights_sha256=sha256_file(staging / WEIGHTS_FILE), weights_dtype=dtype, library_version=library_version(),
        )
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n")
        _readable_as_umask_allows(staging)
    except BaseException:
        _remove_tree(staging)
        raise
    if folder.exists():
        backup = folder.with_name(f".{folder.name}.old")
        os.replace(folder, backup)
        os.replace(staging, folder)
        _remove_tree(backup)
    else:
        os.replace(staging, folder)
    return manifest


def _check_replaceable(folder: Path) -> None:
    """A checkpoint replaces only an earlier checkpoint or an empty folder, never a folder of other files."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise CheckpointError(f"cannot write a checkpoint to {str(folder)!r}: it is a file")
    if not (folder / MANIFEST_FILE).is_file() and any(folder.iterdir()):
        raise CheckpointError(f"refusing to replace {str(folder)!r}: it holds files and is not a checkpoint "
                              f"(no {MANIFEST_FILE}); pick another folder or empty it first")


def _readable_as_umask_allows(staging: Path) -> None:
    """mkdtemp makes a 0700 folder: a service running as another user (a container's) could not read it."""
    mask = os.umask(0)
    os.umask(mask)
    staging.chmod(0o777 & ~mask)
    for path in staging.iterdir():
        path.chmod(0o666 & ~mask)


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def read_manifest(folder: str | Path) -> Manifest:
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {str(folder)!r} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint folder {str(folder)!r} has no {MANIFEST_FILE}")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: manifest is not valid JSON ({exc})") from None
    if raw.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {raw.get('format_version')!r} is not supported "
            f"(this library reads {FORMAT_VERSION})"
        )
    try:
        return Manifest(**raw)
    except TypeError as exc:
        raise CheckpointError(f"{path}: manifest fields do not match the format: {exc}") from None


def load_bond_checkpoint(
    folder: str | Path,
    *,
    kind: str | None = None,
    d_in: int | None = None,
    d_out: int | None = None,
    device: str = "cpu",
) -> tuple[ProjectorMixture, Manifest]:
    """Projector mixture (eval mode, float32) and manifest; raises `CheckpointError`/`DimensionError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    manifest = read_manifest(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"checkpoint folder {str(folder)!r} has no {WEIGHTS_FILE}")
    actual = sha256_file(weights)
    if actual != manifest.weights_sha256:
        raise CheckpointError(
            f"{weights}: sha256 {actual[:12]}... does not match the manifest's {manifest.weights_sha256[:12]}...")
    if kind is not None and manifest.kind != kind:
        raise CheckpointError(f"{folder}: holds a {manifest.kind} bond, but a {kind} bond is needed here")
    config = ProjectorConfig.from_dict(manifest.projector)
    for what, want, have in (("input", d_in, config.d_in), ("output", d_out, config.d_out)):
        if want is not None and want != have:
            raise DimensionError(f"{folder}: projector {what} is {have}-d, but the space here needs {want}-d")
    try:
        state = load_file(str(weights))
    except SafetensorError as exc:
        raise CheckpointError(f"{weights}: unreadable safetensors file ({exc})") from None
    projector = ProjectorMixture(config)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    try:
        projector.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights}: weights do not fit the manifest's projector config: {exc}") from None
    projector._weights_checksum = manifest.weights_sha256
    return projector.to(device).eval(), manifest
