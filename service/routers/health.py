"""`GET /health/live` and `GET /health/ready`: the truth about the engine, for orchestrators.

live: the process can serve, now or after loading; false only when a restart is the fix (spaces failed
to load, a batching worker died). ready: spaces loaded, warmed up, and every encoder's batches
succeeding; while an encoder is failing, each readiness check sends it one tiny probe first. Neither
needs an API key.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.deps import EngineDep

# Not alive / not ready is a plain JSON status document (like the 200), not a problem.
NOT_READY = {"description": "Not alive or not ready",
             "content": {"application/json": {"schema": {"type": "object", "required": ["status"]}}}}
router = APIRouter(prefix="/health", tags=["health"], responses={503: NOT_READY})


@router.get("/live", summary="Liveness")
async def live(engine: EngineDep) -> JSONResponse:
    alive = engine.alive
    return JSONResponse({"status": "alive" if alive else "dead", **engine.health()}, status_code=200 if alive else 503)


@router.get("/ready", summary="Readiness")
async def ready(engine: EngineDep) -> JSONResponse:
    if engine.state == "ready" and not engine.ready:
        await engine.probe()
    ok = engine.ready
    return JSONResponse({"status": "ready" if ok else "not ready", **engine.health()}, status_code=200 if ok else 503)
