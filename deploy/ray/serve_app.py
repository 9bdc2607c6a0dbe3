"""FreeBind on Ray Serve: the very same FastAPI app (`service.app.create_app`), replicated.

    pip install 'freebind[ray]'
    serve run deploy.ray.serve_app:app_builder num_replicas=2 num_gpus=0.5
    serve deploy deploy/ray/serve_config.yaml

Each replica builds the app from `FREEBIND_*` settings in its own process (models load once per
replica, the lifespan runs there), and Ray's proxy spreads requests, and so the embedding work, over the
replicas.

Collections: a store belongs to one process, and Ray's proxy sends each request to any replica, so an
item added through one replica would be missing from the others (and each restart made a new, empty
store). A deployment that can have more than one replica therefore keeps no collections: every
collection request answers 501 with the reason (service.collections_off). One fixed replica keeps
them in FREEBIND_DATA_DIR itself, the same folder after a restart; run it as its own application and
send /collections and /search there.

Health: Ray routes to a replica once its first health check passes, and that check waits for the
spaces to load and warm up, so no request meets a replica that would answer 503; later checks fail
when the engine is dead (a failed start, a dead encoder worker), and Ray replaces the replica.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application


def build_app(keep_collections: bool):
    """Runs on each replica: settings come from that replica's environment (runtime_env env_vars)."""
    from service.app import create_app
    from service.settings import get_settings

    settings = get_settings()
    return create_app(settings if keep_collections else settings.model_copy(update={"collections": False}))


class FreeBindReplica:
    """One replica: the whole service. Every route is the FastAPI app's; Ray calls `check_health`."""

    async def check_health(self) -> None:
        engine = self.app.state.engine  # `app`: the ASGI app Ray's ingress wrapper built
        if engine.state in ("starting", "loading", "warming"):
            await engine.wait_ready()  # the first check: not routed to before the spaces are ready
        if not engine.alive:
            raise RuntimeError(f"the engine is {engine.state}: {engine.error or 'an encoder worker died'}")


def keeps_collections(num_replicas: int | None, autoscaling: dict[str, Any] | None) -> bool:
    """Only a deployment of exactly one replica can keep collections (see the module's docstring)."""
    if autoscaling:
        return int(autoscaling.get("max_replicas", 1)) == 1
    return num_replicas == 1


def freebind_deployment(
    num_replicas: int | None = 2,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    autoscaling: dict[str, Any] | None = None,
    max_ongoing_requests: int = 64,
):
    """The deployment with replica resources; `autoscaling` (Ray's autoscaling_config) replaces a fixed count."""
    keep = keeps_collections(num_replicas, autoscaling)

    def build():  # a plain function: Ray's ingress calls it on the replica
        return build_app(keep)

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
    return serve.deployment(**options)(serve.ingress(build)(FreeBindReplica))


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
