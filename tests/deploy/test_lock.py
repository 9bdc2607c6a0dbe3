"""The locks in locks/ against pyproject.toml: every dependency a profile installs is pinned there, with
hashes, at a version pyproject.toml allows; nothing the project no longer asks for stays pinned as its own
requirement; the profiles agree on versions. A dependency added to one file and not the other fails here
(the fix is `make lock`)."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
LOCKS = REPO / "locks"
# profile -> the extras scripts/lock.sh compiles it with
PROFILES = {"serve": ("models",), "test": ("models", "dev"), "docker": ("models", "milvus"),
            "cuda": ("models", "milvus")}
# the CUDA set swaps faiss-cpu for faiss-gpu-cu12 (the same `faiss` module)
SWAPPED = {"cuda": {"faiss-cpu": "faiss-gpu-cu12"}}
TARGET = {"python_version": "3.11", "python_full_version": "3.11.7", "sys_platform": "linux",
          "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
          "implementation_name": "cpython", "platform_python_implementation": "CPython"}


@dataclass
class Pin:
    version: str
    hashes: list[str] = field(default_factory=list)
    via: str = ""


def read_lock(text: str) -> dict[str, Pin]:
    """name -> pin of a requirements file written by `uv pip compile --generate-hashes --annotation-style line`."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for line in text.splitlines():
        if match := re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line):
            current = pins[canonicalize_name(match[1])] = Pin(match[2])
        elif current is not None and (found := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            current.hashes.append(found[1])
        elif current is not None and line.strip().startswith("# via"):
            current.via = line.strip()
        elif line.strip() and not line.startswith("#") and not line.startswith(" "):
            raise ValueError(f"unexpected lock line: {line!r}")
    return pins


def wanted(pyproject: dict, extras: tuple[str, ...]) -> list[Requirement]:
    """The project's requirements for `extras` that apply on the target platform."""
    project = pyproject["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        requirements += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return [r for r in requirements if r.marker is None or r.marker.evaluate({**TARGET, "extra": ""})]


def mismatches(pyproject: dict, profile: str, pins: dict[str, Pin]) -> list[str]:
    problems = []
    swapped = SWAPPED.get(profile, {})
    wanted_names = set()
    for requirement in wanted(pyproject, PROFILES[profile]):
        name = canonicalize_name(swapped.get(requirement.name, requirement.name))
        wanted_names.add(name)
        if name not in pins:
            problems.append(f"{profile}: {requirement} is in pyproject.toml but not in the lock")
        elif name == canonicalize_name(requirement.name) and not requirement.specifier.contains(
                Version(pins[name].version), prereleases=True):
            problems.append(f"{profile}: the lock pins {name}=={pins[name].version}, pyproject.toml asks {requirement}")
    for name, pin in pins.items():  # pinned as the project's own requirement, yet no longer asked for
        if "freebind (pyproject.toml)" in pin.via and name not in wanted_names:
            problems.append(f"{profile}: the lock pins {name} for the project, which pyproject.toml no longer asks for")
    return problems


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def locks() -> dict[str, dict[str, Pin]]:
    return {profile: read_lock((LOCKS / f"{profile}.txt").read_text()) for profile in PROFILES}


@pytest.mark.parametrize("profile", PROFILES)
def test_every_dependency_is_pinned_with_hashes_at_an_allowed_version(pyproject, locks, profile):
    pins = locks[profile]
    assert mismatches(pyproject, profile, pins) == []
    assert all(pin.hashes for pin in pins.values()), [n for n, p in pins.items() if not p.hashes]
    assert "setuptools" in pins  # install.sh builds the project with --no-build-isolation


def test_torch_is_the_pinned_build_of_each_profile(locks):
    for profile in ("serve", "test", "docker"):
        assert locks[profile]["torch"].version == "2.13.0+cpu"
        assert not any(name.startswith("nvidia-") for name in locks[profile])
    assert locks["cuda"]["torch"].version == "2.13.0"
    assert "faiss-gpu-cu12" in locks["cuda"] and "faiss-cpu" not in locks["cuda"]


def test_profiles_share_versions(locks):
    """`make test` tests the versions `make serve` and the image run."""
    for profile in ("serve", "docker", "cuda"):
        for name, pin in locks[profile].items():
            if name in locks["test"] and name != "torch":
                assert pin.version == locks["test"][name].version, (profile, name)
    assert set(locks["serve"]) <= set(locks["test"])


def test_a_dependency_added_to_one_side_only_is_caught(pyproject, locks):
    added = {**pyproject, "project": {**pyproject["project"],
                                       "dependencies": [*pyproject["project"]["dependencies"], "left-pad>=1"]}}
    assert any("left-pad" in p for p in mismatches(added, "serve", locks["serve"]))
    removed = {**pyproject, "project": {**pyproject["project"], "dependencies": [
        r for r in pyproject["project"]["dependencies"] if not r.startswith("orjson")]}}
    assert any("orjson" in p and "no longer" in p for p in mismatches(removed, "serve", locks["serve"]))
    narrowed = {**pyproject, "project": {**pyproject["project"], "dependencies": [
        "numpy>=99" if r.startswith("numpy") else r for r in pyproject["project"]["dependencies"]]}}
    assert any("numpy" in p and "asks" in p for p in mismatches(narrowed, "serve", locks["serve"]))


def test_install_script_and_image_install_from_the_locks():
    script = (REPO / "scripts" / "install.sh").read_text()
    assert "--require-hashes" in script and 'LOCK=locks/$PROFILE.txt' in script
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "COPY locks ./locks" in dockerfile and "FREEBIND_PROFILE=docker" in dockerfile
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^lock:", makefile, re.M) and "scripts/lock.sh" in makefile
