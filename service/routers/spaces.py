"""`GET /spaces` and `GET /spaces/{name}`: what is served and how it can be mixed.

Per space: dimension, modalities, bonds (kind, experts, mixable modalities, default factors), presets,
the default mixing and its fingerprint, and every encoder with its licence (some are non-commercial).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from bonds.space import Space
from service.deps import EngineDep

router = APIRouter(tags=["spaces"])


def describe(space: Space, default: bool) -> dict[str, Any]:
    return {**space.describe(), "default": default, "default_mixing": space.resolve(None).to_dict(),
            "fingerprint": space.fingerprint(None)}


@router.get("/spaces", summary="Served spaces, their bonds, presets and encoder licences")
async def list_spaces(engine: EngineDep) -> dict[str, Any]:
    engine.space()  # not ready yet -> 503, rather than an empty list that looks final
    return {"default": engine.default_space,
            "spaces": [describe(s, s.name == engine.default_space) for s in engine.spaces.values()]}


@router.get("/spaces/{name}", summary="One served space")
async def get_space(name: str, engine: EngineDep) -> dict[str, Any]:
    return describe(engine.space(name), name == engine.default_space)
