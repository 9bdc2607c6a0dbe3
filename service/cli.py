"""`freebind serve`: settings from options and `FREEBIND_*` variables, then uvicorn on `create_app`.

Every field of `service.settings.Settings` is also an environment variable; the options below are the
ones worth a flag. API keys come only from `FREEBIND_API_KEYS` (a flag would show them in `ps`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer


def serve_command(
    host: str = typer.Option(None, "--host", envvar="FREEBIND_HOST", help="interface to listen on [127.0.0.1]"),
    port: int = typer.Option(None, "--port", envvar="FREEBIND_PORT", help="TCP port [8000]"),
    # no envvar here: click would split FREEBIND_SPACES on whitespace ('["a", "b"]' -> '["a",' and '"b"]');
    # the settings object reads it whole
    space: list[str] = typer.Option(None, "--space", help="space name or description file; repeat for several "
                                    "(env FREEBIND_SPACES: a JSON list or a,b) [starter_e5]"),
    default_space: str = typer.Option(None, "--default-space", envvar="FREEBIND_DEFAULT_SPACE",
                                      help="space of requests that name none [the first]"),
    data_dir: Path = typer.Option(None, "--data-dir", envvar="FREEBIND_DATA_DIR", help="collections folder [./data]"),
    milvus_uri: str = typer.Option(None, "--milvus-uri", envvar="FREEBIND_MILVUS_URI",
                                   help="Milvus for collections with index backend milvus: data/milvus.db or "
                                        "http://host:19530 [none]"),
    models_root: Path = typer.Option(None, "--models-root", envvar="FREEBIND_MODELS_ROOT",
                                     help="folder ${models_root} in space descriptions points to"),
    device: str = typer.Option(None, "--device", envvar="FREEBIND_DEVICE", help="torch device: cpu, cuda, cuda:1"),
    dtype: str = typer.Option(None, "--dtype", envvar="FREEBIND_DTYPE",
                              help="encoder precision: auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16, "
                                   "float16 [auto]"),
    max_batch_size: int = typer.Option(None, "--max-batch-size", envvar="FREEBIND_MAX_BATCH_SIZE",
                                       help="items per model call, any modality [each encoder's own]"),
    max_wait_ms: float = typer.Option(None, "--max-wait-ms", envvar="FREEBIND_MAX_WAIT_MS",
                                      help="how long an idle model waits for a batch to fill [0]"),
    allow_urls: bool = typer.Option(None, "--allow-urls/--no-allow-urls", envvar="FREEBIND_ALLOW_URLS",
                                    help="let media inputs be http(s) URLs the server fetches [off]"),
    log_level: str = typer.Option(None, "--log-level", envvar="FREEBIND_LOG_LEVEL",
                                  help="debug, info, warning, error [info]"),
) -> None:
    """Serve the embedding API (and the playground page) over HTTP."""
    from service.settings import get_settings

    settings = get_settings(
        host=host, port=port, spaces=space or None, default_space=default_space, data_dir=data_dir, milvus_uri=milvus_uri,
        models_root=models_root, device=device, dtype=dtype, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
        allow_urls=allow_urls, log_level=log_level,
    )
    logging.getLogger().setLevel(settings.log_level.upper())
    logging.getLogger(__name__).info("serving %s on http://%s:%d", ", ".join(settings.spaces), settings.host,
                                     settings.port)
    run_server(settings)


def run_server(settings) -> None:
    """uvicorn on the app of `settings`, with its server settings (the CLI and test servers both start here)."""
    import uvicorn

    from service.app import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
                timeout_keep_alive=settings.keep_alive_s)
