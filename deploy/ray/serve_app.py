"""FreeBind on Ray Serve: the very same FastAPI app (`service.app.create_app`), replicated.

    pip install 'freebind[ray]'
    serve run deploy.ray.serve_app:app_builder num_replicas=2 num_gpus=0.5
    serve deploy deploy/ray/serve_config.yaml

Each replica builds the app from `FREEBIND_*` settings in its own process (models load once per
replica, the lifespan runs there), and Ray's proxy spreads requests, and so the embedding work, over the
replicas.

Collections: a store belongs to one process, and Ray's proxy sends each request to any replica (each
replica used to open its own, `replica-<id>`, a new one per restart). With more than one replica the
application has one more deployment, `freebind-collections`: a single replica that keeps every
collection in FREEBIND_DATA_DIR, to which the replicas pass each collection request whole
(deploy.ray.forward). An item added through any replica is found through any other, and after a
restart. A deployment of exactly one replica keeps its collections itself.

Health: Ray routes to a replica once its first health check passes, and that check waits for the
spaces to load and warm up, so no request meets a replica that would answer 503; later checks fail
when the engine is dead (a failed start, a dead encoder worker), and Ray replaces the replica.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from deploy.ray.forward import ForwardCollections, Forwarded, answer_with


def build_app(keep_collections: bool):
    """Runs on each replica: settings come from that replica's environment (runtime_env env_vars)."""
    from service.app import create_app
    from service.settings import get_settings

    settings = get_settings()
    return create_app(settings if keep_collections else settings.model_copy(update={"collections": False}))


class _Replica:
    """What both kinds of replica share: the FastAPI app they serve, and Ray's health check over it."""

    fastapi_app: Any = None

    async def check_health(self) -> None:
        engine = self.fastapi_app.state.engine
        if engine.state in ("starting", "loading", "warming"):
            await engine.wait_ready()  # the first check: not routed to before the spaces are ready
        if not engine.alive:
            raise RuntimeError(f"the engine is {engine.state}: {engine.error or 'an encoder worker died'}")


class FreeBindReplica(_Replica):
    """One replica: the whole service, collection requests passed to `collections` when there is one."""

    def __init__(self, collections: DeploymentHandle | None = None):
        self.collections = collections

    def __serve_build_asgi_app__(self):  # Ray calls it on the replica, after __init__
        self.fastapi_app = build_app(keep_collections=self.collections is None)
        if self.collections is None:
            return self.fastapi_app
        return ForwardCollections(self.fastapi_app, self._to_owner, self.fastapi_app.state.settings.max_body_bytes,
                                  replica=_replica_id())

    async def _to_owner(self, request: Forwarded) -> Forwarded:
        return await self.collections.forward.remote(request)


class CollectionsOwner(_Replica):
    """The one replica that keeps the collections of a replicated deployment. Not an HTTP ingress (an
    application has one), so it runs its app's lifespan itself: the store opens, the spaces load."""

    async def __init__(self):
        self.fastapi_app = build_app(keep_collections=True)
        self._lifespan = self.fastapi_app.router.lifespan_context(self.fastapi_app)
        await self._lifespan.__aenter__()

    async def forward(self, request: Forwarded) -> Forwarded:
        return await answer_with(self.fastapi_app, request)

    async def __del__(self):  # Ray awaits it when the replica stops: the collections are saved
        await self._lifespan.__aexit__(None, None, None)


def _replica_id() -> str:
    replica = serve.get_replica_context().replica_id
    return getattr(replica, "unique_id", "") or str(replica)


def keeps_collections(num_replicas: int | None, autoscaling: dict[str, Any] | None) -> bool:
    """Whether the replicas can keep the collections themselves: only when there is exactly one."""
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
    return serve.deployment(**options)(serve.ingress()(FreeBindReplica))


def collections_deployment(num_cpus: float = 1.0, num_gpus: float = 0.0, max_ongoing_requests: int = 64):
    """The collections owner: one replica, never more (its store is one process's)."""
    return serve.deployment(name="freebind-collections", num_replicas=1, health_check_period_s=10,
                            ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus},
                            max_ongoing_requests=max_ongoing_requests)(CollectionsOwner)


def freebind_application(num_replicas: int | None = 2, num_cpus: float = 1.0, num_gpus: float = 0.0,
                         autoscaling: dict[str, Any] | None = None) -> Application:
    """The replicas, and the collections owner they pass collection requests to when there can be several."""
    replicas = freebind_deployment(num_replicas, num_cpus, num_gpus, autoscaling)
    if keeps_collections(num_replicas, autoscaling):
        return replicas.bind()
    return replicas.bind(collections_deployment(num_cpus, num_gpus).bind())


def app_builder(args: dict[str, str]) -> Application:
    """`serve run deploy.ray.serve_app:app_builder key=value ...` (values arrive as strings)."""
    autoscaling = None
    if "max_replicas" in args:
        autoscaling = {
            "min_replicas": int(args.get("min_replicas", 1)),
            "max_replicas": int(args["max_replicas"]),
            "target_ongoing_requests": float(args.get("target_ongoing_requests", 16)),
        }
    return freebind_application(num_replicas=int(args.get("num_replicas", 2)), num_cpus=float(args.get("num_cpus", 1)),
                                num_gpus=float(args.get("num_gpus", 0)), autoscaling=autoscaling)
