"""/classify: zero-shot classification over description-augmented class centers (UniBind), and
/labelsets, the shipped label sets.

The route parses the request and calls service.classification.classify, which says what is done.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from bonds.classify import list_labelsets
from bonds.mixing import Mixing
from service import classification
from service.classification import CenterCache, shipped_labelset
from service.deps import EngineDep, MetricsDep, SettingsDep, TicketDep
from service.inputs import decode, parse_inputs

router = APIRouter(tags=["classify"])


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: list[Any] = Field(..., min_length=1, description='strings or {"text"|"image"|"audio"|"vector": ...}')
    labels: list[str] | dict[str, list[str] | str] | None = Field(
        None, description="label names, or label -> one or more descriptions")
    labelset: str | None = Field(None, description="a shipped label set instead of `labels` (GET /labelsets)")
    templates: list[str] | None = Field(None, description="for label names: prompts with '{}' for the name")
    space: str | None = None
    mixing: Mixing | None = Field(None, description="preset, factors, off, weights")
    aggregate: Literal["max", "mean"] = Field("max", description="a label's score over its descriptions")
    top_k: int = Field(5, ge=1, le=1000)


def center_cache(request: Request) -> CenterCache:
    state = request.app.state
    if getattr(state, "center_cache", None) is None:  # per app, made on first use
        state.center_cache = CenterCache()
    return state.center_cache


@router.post("/classify")
async def classify(body: ClassifyRequest, request: Request, engine: EngineDep, settings: SettingsDep,
                   metrics: MetricsDep, ticket: TicketDep) -> dict[str, Any]:
    return await classification.classify(
        engine, center_cache(request), settings, ticket,
        lambda raw: decode(parse_inputs, raw, settings, metrics, ticket), inputs=body.inputs,
        space_name=body.space, mixing=body.mixing, labels=body.labels, labelset=body.labelset,
        templates=body.templates, aggregate=body.aggregate, top_k=body.top_k)


@router.get("/labelsets")
async def labelsets() -> dict[str, Any]:
    out = []
    for name in list_labelsets():
        labels = shipped_labelset(name)
        out.append({"name": name, "labels": len(labels.labels), "descriptions": len(labels.descriptions)})
    return {"labelsets": out}
