"""Every example of the user's guide (docs/guide.md) runs, in the order written, against real servers on
loopback: ```bash blocks in bash (curl fails on an HTTP error), ```python blocks in this process.

The default run serves a tiny stand-in of `starter_e5` (same name, bond `e5`, presets `english` and
`multilingual`; tiny encoders, 16-d) so the whole guide takes seconds; the e2e run serves the real space
with real media. ```console blocks are the server starts the fixtures do themselves (checked to be only
those); `<!-- guide-test: keyed -->` before a block runs it against a server with an API key, in
$FREEBIND_API_KEY. The settings table must equal what `service.settings` generates.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from PIL import Image

import bonds.description
from bonds.checkpoint import save_bond_checkpoint
from bonds.projector import ProjectorConfig, ProjectorMixture
from harness.servers import Server
from service.settings import setting_rows

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide.md"
BLOCK = re.compile(r"(?:<!-- guide-test: (?P<mark>[\w -]+) -->\n)?```(?P<lang>\w+)\n(?P<code>.*?)```", re.S)
KEY = "guide-key"
SERVER_STARTS = (re.compile(r"^make serve$"), re.compile(r"^FREEBIND_API_KEYS='\[.*\]' make serve$"))


@dataclass
class Example:
    lang: str
    code: str
    mark: str | None
    line: int

    def __str__(self) -> str:
        return f"docs/guide.md:{self.line} ({self.lang})"


def examples() -> list[Example]:
    text = GUIDE.read_text()
    return [Example(m["lang"], m["code"], m["mark"], text[: m.start()].count("\n") + 1) for m in BLOCK.finditer(text)]


def write_stand_in(folder: Path) -> Path:
    """`starter_e5` in miniature: a 16-d tiny base for text, image and audio, a tiny 8-d text expert `e5`
    combined in by a random projector, the real space's presets."""
    torch.manual_seed(0)
    save_bond_checkpoint(folder / "checkpoints" / "e5_into_starter",
                         ProjectorMixture(ProjectorConfig(8, 16, hidden=32, heads=("mix",))).eval(), kind="combination",
                         source={"id": "e5", "dim": 8}, target={"id": "starter", "dim": 16}, modalities=["text"])
    path = folder / "starter_e5.yaml"
    path.write_text(yaml.safe_dump({
        "format_version": 1, "name": "starter_e5", "base": "starter",
        "encoders": {"starter": {"kind": "tiny", "options": {"dim": 16, "seed": 0}},
                     "e5": {"kind": "tiny", "options": {"dim": 8, "seed": 1, "modalities": ["text"]}}},
        "bonds": [{"name": "e5", "kind": "combination",
                   "experts": {"e5": {"checkpoint": "checkpoints/e5_into_starter"}}, "factors": {"text": 0.8}}],
        "presets": {"english": {"e5": {"text": 0.5}}, "multilingual": {"e5": {"text": 0.8}}},
        "default_preset": "multilingual",
    }))
    return path


def write_media(folder: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "dog.jpg", quality=90)
    t = np.arange(8000) / 16_000
    sf.write(folder / "bark.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16_000)


class Runner:
    """Runs examples against an open and a keyed server, in `workdir` (where the media are)."""

    def __init__(self, open_base: str, keyed_base: str, workdir: Path, monkeypatch):
        self.bases = {None: open_base, "keyed": keyed_base}
        self.workdir, self.monkeypatch = workdir, monkeypatch

    def run(self, example: Example) -> str:
        base = self.bases["keyed" if example.mark == "keyed" else None]
        code = example.code.replace("http://localhost:8000", base).replace("localhost:8000", base)
        if example.lang == "bash":
            return self._bash(code)
        if example.lang == "python":
            return self._python(code, example)
        raise AssertionError(f"{example}: no runner for {example.lang!r}")

    def _bash(self, code: str) -> str:
        # curl with --fail-with-body: an example that gets a 4xx/5xx fails here instead of printing it
        preamble = "set -euo pipefail\ncurl() { command curl --fail-with-body \"$@\"; }\n"
        if "%{http_code}" in code:  # the example that shows an error on purpose prints the status itself
            preamble = "set -euo pipefail\n"
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "FREEBIND_API_KEY": KEY}
        done = subprocess.run(["bash", "-c", preamble + code], cwd=self.workdir, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, (f"exit {done.returncode}\n{code}\nstdout: {done.stdout[-2000:]}\n"
                                      f"stderr: {done.stderr[-2000:]}")
        return done.stdout

    def _python(self, code: str, example: Example) -> str:
        self.monkeypatch.chdir(self.workdir)
        self.monkeypatch.setenv("FREEBIND_API_KEY", KEY)
        exec(compile(code, str(example), "exec"), {"__name__": "__guide__"})  # noqa: S102 - the guide's own code
        return ""


def test_the_guide_has_examples_of_every_endpoint_and_only_known_server_starts():
    found = examples()
    code = "\n".join(e.code for e in found)
    for endpoint in ("/embed", "/embed/upload", "/v1/embeddings", "/v1/models", "/spaces", "/collections", "/items",
                     "/search", "/classify", "/labelsets", "/health/ready", "/metrics"):
        assert endpoint in code, endpoint
    for lang in ("bash", "python"):
        assert sum(e.lang == lang for e in found) >= 10, lang
    assert {e.lang for e in found} <= {"bash", "python", "console", "json"}
    for example in (e for e in found if e.lang == "console"):
        for line in example.code.strip().splitlines():
            assert any(start.match(line) for start in SERVER_STARTS), f"{example}: {line!r} is not run by this test"


def test_the_settings_table_is_the_generated_one():
    rows = [f"| `{r['env']}` | {r['default']} | {r['help']} |" for r in setting_rows()]
    text = GUIDE.read_text()
    table = text[text.index("| variable | default | what it sets |"):].split("\n\n", 1)[0].splitlines()[2:]
    assert table == rows


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> Path:
    return write_stand_in(tmp_path_factory.mktemp("spaces"))


def run_guide(space: str, tmp_path: Path, monkeypatch, launcher: str = "fork") -> None:
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    if not (workdir / "dog.jpg").exists():  # the e2e run put real media there
        write_media(workdir)
    with Server([space], tmp_path / "open" / "data", launcher=launcher) as open_server, \
            Server([space], tmp_path / "keyed" / "data", launcher=launcher, api_keys=KEY) as keyed_server:
        runner = Runner(open_server.base, keyed_server.base, workdir, monkeypatch)
        for example in examples():
            if example.lang in ("bash", "python"):
                try:
                    runner.run(example)
                except Exception as exc:
                    raise AssertionError(f"{example} failed: {exc}") from exc


def test_every_example_runs_against_a_server(stand_in, tmp_path, monkeypatch):
    monkeypatch.setattr(bonds.description, "SHIPPED_DIR", stand_in.parent)  # load_space("starter_e5") in the library
    run_guide(str(stand_in), tmp_path, monkeypatch)


@pytest.mark.e2e
def test_every_example_runs_against_the_real_default_space(tmp_path, monkeypatch, shared_data):
    workdir = tmp_path / "work"
    workdir.mkdir()
    shutil.copy(shared_data / "imagebind-demo" / "dog_image.jpg", workdir / "dog.jpg")
    shutil.copy(shared_data / "imagebind-demo" / "dog_audio.wav", workdir / "bark.wav")
    run_guide("starter_e5", tmp_path, monkeypatch, launcher="cli")
