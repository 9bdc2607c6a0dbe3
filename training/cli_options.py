"""What every `freebind train` command shares: the work folder, device and progress options, and the
error exit (a message on stderr, status 2). training.cli and training.cli_imagenet both read them."""

from __future__ import annotations

from pathlib import Path

import typer

WORKDIR = typer.Option(Path("artifacts/train"), "--workdir", envvar="FREEBIND_TRAIN_WORKDIR",
                       help="work folder shared by all stages (embeddings/, pairs/, fit/, eval/)")
NO_PROGRESS = typer.Option(False, "--no-progress", envvar="FREEBIND_TRAIN_NO_PROGRESS",
                           help="turn the progress bars off (logs still say what happened)")
DEVICE = typer.Option(None, "--device", envvar="FREEBIND_TRAIN_DEVICE", help="torch device for models (cpu, cuda)")


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)
