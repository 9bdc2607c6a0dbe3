"""Atomic snapshots of a collection's arrays and ANN index.

A snapshot is a folder `snap-<seq>/` (one `.npz` per modality group, `ann.faiss`, `manifest.json`)
holding the state after log entry `seq`. It is written as `snap-<seq>.tmp/`, every file fsynced, then
renamed; only then does `CURRENT` (itself written to a temp file, fsynced, `os.replace`d) point at it.
A crash at any step leaves `CURRENT` naming the previous complete snapshot, and the log still holds
everything after it. Leftover temp folders and superseded snapshots are removed on the next open.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.index.groups import Group, GroupView

CURRENT = "CURRENT"


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def replace_atomically(path: Path, data: bytes) -> None:
    """Write temp + fsync + os.replace + fsync of the folder: readers see the old file or the new one."""
    temp = path.with_name(path.name + ".tmp")
    write_durably(temp, data)
    os.replace(temp, path)
    fsync_dir(path.parent)


@dataclass
class Snapshot:
    seq: int
    groups: dict[str, Group]
    ann: np.ndarray  # serialized FAISS index (uint8), empty when there was none
    trained_on: int


def save(folder: Path, seq: int, views: dict[str, GroupView], ann: np.ndarray, trained_on: int) -> None:
    """Write the live rows of `views` and the ANN bytes as the snapshot after log entry `seq`."""
    name = f"snap-{seq:012d}"
    temp = folder / f"{name}.tmp"
    shutil.rmtree(temp, ignore_errors=True)
    try:
        _write(temp, seq, views, ann, trained_on)
    except BaseException:  # a full disk: the log still holds everything; leave no half-written folder
        shutil.rmtree(temp, ignore_errors=True)
        raise
    final = folder / name
    shutil.rmtree(final, ignore_errors=True)
    os.rename(temp, final)
    fsync_dir(folder)
    replace_atomically(folder / CURRENT, json.dumps({"snapshot": name, "seq": seq}).encode())


def _write(temp: Path, seq: int, views: dict[str, GroupView], ann: np.ndarray, trained_on: int) -> None:
    temp.mkdir()
    groups = {}
    for modality, view in views.items():
        rows = view.live_rows()
        path = temp / f"{modality}.npz"
        with open(path, "wb") as handle:
            np.savez(handle, ids=view.ids[rows], leaves=view.leaves[rows], gram=view.gram[rows],
                     vectors=view.vectors[rows])
            handle.flush()
            os.fsync(handle.fileno())
        groups[modality] = view.keys
    write_durably(temp / "ann.faiss", np.asarray(ann, dtype=np.uint8).tobytes())
    manifest = {"seq": seq, "groups": groups, "trained_on": trained_on}
    write_durably(temp / "manifest.json", json.dumps(manifest).encode())
    fsync_dir(temp)


def load(folder: Path, dim: int) -> Snapshot | None:
    """The snapshot `CURRENT` names, or None before the first one."""
    pointer = folder / CURRENT
    if not pointer.exists():
        return None
    current = json.loads(pointer.read_text())
    where = folder / current["snapshot"]
    manifest = json.loads((where / "manifest.json").read_text())
    groups = {}
    for modality, keys in manifest["groups"].items():
        with np.load(where / f"{modality}.npz") as arrays:
            group = Group(modality, keys, dim, capacity=max(64, len(arrays["ids"])))
            group.append(arrays["ids"], arrays["leaves"], arrays["gram"], arrays["vectors"])
        groups[modality] = group
    ann = np.fromfile(where / "ann.faiss", dtype=np.uint8)
    return Snapshot(manifest["seq"], groups, ann, manifest.get("trained_on", 0))


def clean(folder: Path) -> None:
    """Remove temp folders and every snapshot but the current one."""
    pointer = folder / CURRENT
    keep = json.loads(pointer.read_text())["snapshot"] if pointer.exists() else None
    for path in folder.glob("snap-*"):
        if path.name != keep:
            shutil.rmtree(path, ignore_errors=True)
    (folder / f"{CURRENT}.tmp").unlink(missing_ok=True)
