"""`freebind`: the command line. The library adds `import-checkpoint` and `spaces`; the `service` and
`training` packages plug in `serve` and `train` through the `freebind.commands` entry points, so this
module never imports them."""

from __future__ import annotations

import json
import logging
from importlib.metadata import entry_points
from pathlib import Path

import typer

# rich_markup_mode None: help texts are plain text, so defaults like [starter_e5] are shown, not eaten as markup
app = typer.Typer(help="FreeBind: bonded multimodal embedding spaces.", no_args_is_help=True, add_completion=False,
                  rich_markup_mode=None)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # every command's, the server's and uvicorn's lines
# libraries that log at INFO what is routine: faiss names each CPU extension it tries ("Loading faiss with
# AVX2 support.", ten lines that read like failures when one is missing)
_CHATTY = ("faiss.loader",)


def quiet_loaders() -> None:
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)


@app.command("import-checkpoint")
def import_checkpoint_command(
    src: Path = typer.Argument(..., help="a released `checkpoints/` folder, or one `<BOND>_Proj` folder in it"),
    dst: Path = typer.Argument(..., help="where to write our checkpoint folders (one per bond)"),
    dtype: str = typer.Option("float32", envvar="FREEBIND_IMPORT_DTYPE", help="stored weights dtype"),
) -> None:
    """Convert released FreeBind projector checkpoints (`.../<BOND>_Proj/<mode>/best.pt`) to our format."""
    from bonds.importer import import_released

    written = import_released(src, dst, dtype=dtype)
    for name, folder in written.items():
        typer.echo(f"{name} -> {folder}")


@app.command("spaces")
def spaces_command() -> None:
    """List the shipped space descriptions."""
    from bonds.description import list_spaces

    typer.echo(json.dumps(list_spaces(), indent=2))


def _plug_in_commands() -> None:
    for entry in entry_points(group="freebind.commands"):
        try:
            command = entry.load()
        except ModuleNotFoundError as exc:  # a package of the distribution that is not importable
            logging.getLogger(__name__).debug("command %s unavailable: %s", entry.name, exc)
            continue
        if isinstance(command, typer.Typer):
            app.add_typer(command, name=entry.name)
        else:
            app.command(entry.name)(command)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    quiet_loaders()
    _plug_in_commands()
    app()
