"""`freebind serve` and `freebind settings`: settings from options and `FREEBIND_*` variables, then uvicorn.

Every field of `service.settings.Settings` is an environment variable; the options below are the ones
worth a flag, and take their help and shown default from the field itself, so flag, variable and
`freebind settings` never disagree. API keys come only from `FREEBIND_API_KEYS` (a flag would show
them in `ps`).

A server that cannot serve exits non-zero with one line that says why: the port is taken (checked by
binding it before anything else opens), or a space failed to load (the spaces still load after the
port opens, so /health answers 503 while a slow space loads).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from pathlib import Path
from typing import Any

import typer

from service.settings import Settings, setting_rows

log = logging.getLogger("freebind.service")


class CannotServe(Exception):
    """What stops a server from serving, in one line for its operator."""


def _option(field: str, *flags: str, env: bool = True, help_extra: str = "") -> Any:
    """A typer option mirroring `Settings.<field>`: its help, its default as shown, its variable."""
    info = Settings.model_fields[field]
    return typer.Option(None, *flags, envvar=f"FREEBIND_{field.upper()}" if env else None,
                        help=f"{info.description}{help_extra}", show_default=_shown_default(field))


def _shown_default(field: str) -> str:
    return next(row["default"] for row in setting_rows() if row["field"] == field)


def serve_command(
    host: str = _option("host", "--host"),
    port: int = _option("port", "--port"),
    # no envvar here: click would split FREEBIND_SPACES on whitespace ('["a", "b"]' -> '["a",' and '"b"]');
    # the settings object reads it whole
    space: list[str] = _option("spaces", "--space", env=False,
                               help_extra="; repeat for several (env FREEBIND_SPACES: a JSON list or a,b)"),
    default_space: str = _option("default_space", "--default-space"),
    data_dir: Path = _option("data_dir", "--data-dir"),
    milvus_uri: str = _option("milvus_uri", "--milvus-uri"),
    models_root: Path = _option("models_root", "--models-root"),
    device: str = _option("device", "--device"),
    dtype: str = _option("dtype", "--dtype"),
    max_batch_size: int = _option("max_batch_size", "--max-batch-size"),
    max_wait_ms: float = _option("max_wait_ms", "--max-wait-ms"),
    allow_urls: bool = _option("allow_urls", "--allow-urls/--no-allow-urls"),
    log_level: str = _option("log_level", "--log-level"),
) -> None:
    """Serve the embedding API, its docs (/docs) and the playground page (/) over HTTP.

    Every setting, flag or not, is also a FREEBIND_* variable: `freebind settings` lists them all.
    """
    from service.logs import configure_logging
    from service.settings import get_settings

    settings = get_settings(
        host=host, port=port, spaces=space or None, default_space=default_space, data_dir=data_dir,
        milvus_uri=milvus_uri,
        models_root=models_root, device=device, dtype=dtype, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
        allow_urls=allow_urls, log_level=log_level,
    )
    configure_logging(settings.log_level)
    log.info("serving %s on http://%s:%d", ", ".join(settings.spaces), settings.host, settings.port)
    try:
        run_server(settings)
    except CannotServe as exc:
        typer.echo(f"freebind serve: {exc}", err=True)
        raise typer.Exit(1) from None


def settings_command() -> None:
    """Every setting of `freebind serve`: its FREEBIND_* variable, its default and what it does."""
    rows = setting_rows()
    env_width = max(len(row["env"]) for row in rows)
    default_width = max(len(row["default"]) for row in rows)
    typer.echo(f"{'variable':<{env_width}}  {'default':<{default_width}}  what it sets")
    for row in rows:
        typer.echo(f"{row['env']:<{env_width}}  {row['default']:<{default_width}}  {row['help']}")


def run_server(settings: Settings) -> None:
    """uvicorn on the app of `settings`, on a socket bound first (the CLI and test servers start here).

    Raises `CannotServe` when the port is taken or the spaces fail to load."""
    import uvicorn

    from service.app import create_app
    from service.logs import uvicorn_log_config

    listening = bind(settings.host, settings.port)
    app = create_app(settings)
    config = uvicorn.Config(app, log_level=settings.log_level.lower(), timeout_keep_alive=settings.keep_alive_s,
                            log_config=uvicorn_log_config())
    server = uvicorn.Server(config)
    with listening:
        failure = asyncio.run(_serve_until_failed(server, app.state.engine, listening))
    if failure is not None:
        raise CannotServe(failure)


async def _serve_until_failed(server, engine, listening: socket.socket) -> str | None:
    """Serve until stopped; stop at once if the spaces fail to load, and return why (None otherwise)."""
    serving = asyncio.create_task(server.serve(sockets=[listening]))
    watching = asyncio.create_task(engine.wait_ready())
    await asyncio.wait({serving, watching}, return_when=asyncio.FIRST_COMPLETED)
    if watching.done() and not watching.cancelled() and engine.state == "failed":
        server.should_exit = True  # a misconfigured server exits: a supervisor or the operator sees it
        await serving
        return f"cannot load the spaces: {engine.error}"
    await serving
    watching.cancel()
    return None


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, or `CannotServe` naming the port: bound before the collections are opened,
    so a second server on a busy port says so instead of failing on the first one's data folder lock."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CannotServe(f"port {port} on {host} is in use (another server?); choose another with --port or "
                              "FREEBIND_PORT") from None
        raise CannotServe(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
