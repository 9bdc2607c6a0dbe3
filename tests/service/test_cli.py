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


@pytest.mark.parametrize("value", ['["starter_e5", "imagebind"]', '["starter_e5","imagebind"]', "starter_e5, imagebind"])
def test_spaces_from_the_environment_in_every_documented_spelling(served, value):
    result = CliRunner().invoke(app, ["serve"], env={"FREEBIND_SPACES": value, "FREEBIND_PORT": "8123"})
    assert result.exit_code == 0, result.output
    assert served[0].spaces == ["starter_e5", "imagebind"] and served[0].port == 8123


def test_space_flags_win_over_the_environment(served):
    result = CliRunner().invoke(app, ["serve", "--space", "a.yaml", "--space", "b.yaml"], env={"FREEBIND_SPACES": "x"})
    assert result.exit_code == 0, result.output
    assert served[0].spaces == ["a.yaml", "b.yaml"]
