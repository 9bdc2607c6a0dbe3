"""`python -m service`: `freebind serve` without an installed distribution (its entry points need one), e.g.
from a checkout whose packages travel as wheels on PYTHONPATH (bench part 7 on a GPU machine)."""

import typer

from service.cli import serve_command

if __name__ == "__main__":
    typer.run(serve_command)
