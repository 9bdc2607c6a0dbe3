"""FreeBind on Ray Serve: the very same FastAPI app (`service.app.create_app`), replicated.

    serve run deploy.ray.serve_app:app_builder num_replicas=2 num_gpus=0.5
    serve deploy deploy/ray/serve_config.yaml

Each replica builds the app from `FREEBIND_*` settings in its own process (models load once per
replica, the lifespan runs there), and Ray's proxy spreads requests, and so the embedding work, over the
replicas. Collections: a store is one process's (it is locked), so each replica opens its own folder under
FREEBIND_DATA_DIR (`replica-<id>`); serve collections from one replica (a separate deployment with
num_replicas=1) or from the distributed index (docs/deploy.md).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import Application


def _build_asgi_app():
    """Runs on each replica: settings come from that replica's environment (runtime_env env_vars)."""
    from service.app import create_app
    from service.settings import get_settings

    settings = get_settings()
    return create_app(settings.model_copy(update={"data_dir": replica_data_dir(settings.data_dir, _replica_id())}))


def replica_data_dir(data_dir: Path, replica_id: str | None) -> Path:
    """The replica's own store folder: two replicas on one node (num_gpus 0.5) sharing FREEBIND_DATA_DIR would
    fight over its lock, and the second would not start."""
    if not replica_id:
        return data_dir
    return Path(data_dir) / f"replica-{re.sub(r'[^A-Za-z0-9_.-]', '_', replica_id)}"


def _replica_id() -> str | None:
    try:
        context = serve.get_replica_context()
    except Exception:  # noqa: BLE001 - not inside a replica (a plain import, a test)
        return None
    replica = getattr(context, "replica_id", None)
    return getattr(replica, "unique_id", None) or getattr(context, "replica_tag", None)


@serve.ingress(_build_asgi_app)
class FreeBindReplica:
    """One replica: the whole service. No methods: every route is the FastAPI app's."""


def freebind_deployment(
    num_replicas: int | None = 2,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    autoscaling: dict[str, Any] | None = None,
    max_ongoing_requests: int = 64,
):
    """The deployment with replica resources; `autoscaling` (Ray's autoscaling_config) replaces a fixed count."""
    options: dict[str, Any] = {
        "name": "freebind",
        "ray_actor_options": {"num_cpus": num_cpus, "num_gpus": num_gpus},
        "max_ongoing_requests": max_ongoing_requests,
        "health_check_period_s": 10,
    }
    if autoscaling:
        options["autoscaling_config"] = autoscaling
    else:
        options["num_replicas"] = num_replicas
    return serve.deployment(**options)(FreeBindReplica)


def app_builder(args: dict[str, str]) -> Application:
    """`serve run deploy.ray.serve_app:app_builder key=value ...` (values arrive as strings)."""
    autoscaling = None
    if "max_replicas" in args:
        autoscaling = {
            "min_replicas": int(args.get("min_replicas", 1)),
            "max_replicas": int(args["max_replicas"]),
            "target_ongoing_requests": float(args.get("target_ongoing_requests", 16)),
        }
    return freebind_deployment(
        num_replicas=int(args.get("num_replicas", 2)),
        num_cpus=float(args.get("num_cpus", 1)),
        num_gpus=float(args.get("num_gpus", 0)),
        autoscaling=autoscaling,
    ).bind()
