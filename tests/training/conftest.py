"""Fixtures of the training tests: the `freebind` CLI with its plug-ins, and real shared pools."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner


@pytest.fixture(scope="session")
def cli():
    """Invoke `freebind ...` in-process; fails the test with the output when the command fails."""
    from bonds.cli import _plug_in_commands, app

    if not any(group.name == "train" for group in app.registered_groups):
        _plug_in_commands()
    runner = CliRunner()

    def invoke(*args: str, ok: bool = True):
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        if ok and result.exit_code != 0:
            raise AssertionError(f"freebind {' '.join(map(str, args))} exited {result.exit_code}:\n{result.output}")
        return result

    return invoke
