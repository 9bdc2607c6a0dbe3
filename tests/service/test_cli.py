"""`freebind serve`: what reaches the settings from flags and FREEBIND_* variables (the server itself is not
started: run_server is replaced by a recorder)."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from service import cli

app = typer.Typer()
app.command("serve")(cli.serve_command)
app.command("other")(lambda: None)  # two commands: `serve` stays a subcommand, as under `freebind`


@pytest.fixture
def served(monkeypatch):
    seen = []
    monkeypatch.setattr(cli, "run_server", seen.append)
    return seen


@pytest.mark.parametrize("value",
                         ['["starter_e5", "imagebind"]', '["starter_e5","imagebind"]', "starter_e5, imagebind"])
def test_spaces_from_the_environment_in_every_documented_spelling(served, value):
    result = CliRunner().invoke(app, ["serve"], env={"FREEBIND_SPACES": value, "FREEBIND_PORT": "8123"})
    assert result.exit_code == 0, result.output
    assert served[0].spaces == ["starter_e5", "imagebind"] and served[0].port == 8123


def test_space_flags_win_over_the_environment(served):
    result = CliRunner().invoke(app, ["serve", "--space", "a.yaml", "--space", "b.yaml"], env={"FREEBIND_SPACES": "x"})
    assert result.exit_code == 0, result.output
    assert served[0].spaces == ["a.yaml", "b.yaml"]


# --- what a newcomer meets: help, the settings list, make serve, a server that cannot serve -------------
def test_serve_help_shows_every_default_and_points_at_the_full_list():
    from bonds.cli import app as freebind

    freebind.command("serve")(cli.serve_command)  # as the entry point plugs it in
    result = CliRunner().invoke(freebind, ["serve", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for shown in ("starter_e5", "127.0.0.1", "8000", "info", "the first space", "FREEBIND_PORT", "freebind settings"):
        assert shown in result.output, shown


def test_settings_lists_every_setting_with_its_variable_and_default():
    from service.settings import Settings

    result = CliRunner().invoke(typer_app_of(cli.settings_command), [])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()[1:]}
    assert set(lines) == {f"FREEBIND_{field.upper()}" for field in Settings.model_fields}
    assert "none (open)" in lines["FREEBIND_API_KEYS"] and "256" in lines["FREEBIND_MAX_ITEMS"]
    assert "torch's" in lines["FREEBIND_TORCH_THREADS"]


def typer_app_of(command) -> typer.Typer:
    single = typer.Typer()
    single.command()(command)
    return single


def test_make_serve_passes_only_the_flags_it_is_given():
    import subprocess

    from harness.processes import REPO

    def command(*args: str) -> str:
        dry = subprocess.run(["make", "-n", "-s", "serve", *args], cwd=REPO, capture_output=True, text=True, check=True,
                             env={"PATH": "/usr/bin:/bin", "FREEBIND_PORT": "9000"})
        return dry.stdout.strip().splitlines()[-1]

    assert command().split() == [".venv/bin/freebind", "serve"]  # FREEBIND_PORT=9000 reaches the server
    assert command("PORT=9001", "SPACE=a b").split()[2:] == ["--port", "9001", "--space", "a", "--space", "b"]


def _serve(*args: str, env: dict[str, str] | None = None):
    import os
    import subprocess

    from harness.processes import FREEBIND

    environment = {k: v for k, v in os.environ.items() if not k.startswith("FREEBIND_")}
    return subprocess.run([str(FREEBIND), "serve", *args], capture_output=True, text=True, timeout=120,
                          env={**environment, **(env or {})})


def test_a_space_that_cannot_load_exits_non_zero_with_one_clear_line(tmp_path):
    from harness.processes import free_port

    done = _serve("--space", "imagebind_pp", "--port", str(free_port()), "--data-dir", str(tmp_path))  # no models root
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("freebind serve: cannot load the spaces:") and "FREEBIND_MODELS_ROOT" in last
    assert "Traceback" not in done.stderr


def test_a_busy_port_is_named_as_such(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _serve("--port", str(port), "--data-dir", str(tmp_path))
    assert done.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use" in done.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "collections").exists()  # refused before the collections were opened
