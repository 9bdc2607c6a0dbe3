"""`POST /v1/embeddings`, shaped like OpenAI's, so OpenAI clients work unchanged.

`model` names a served space; `input` is a string or a list of strings. Media go in as data URIs
(`data:image/png;base64,...`, `data:audio/wav;base64,...`), recognised by their media type, or as
base64 with `modality` set. Extra fields beyond OpenAI's: `modality` and `mixing`. Token-id inputs
are refused: a space embeds text, not one tokenizer's ids.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from bonds.errors import DimensionError
from bonds.mixing import Mixing
from service.deps import EngineDep, MetricsDep, SettingsDep, TicketDep
from service.errors import InvalidInput
from service.inputs import parse_inputs
from service.responses import VectorResponse
from service.routers.embed import EncodingFormat, decode, encode_vector

router = APIRouter(prefix="/v1", tags=["openai"])


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str | list[str] | list[int] | list[list[int]] = Field(..., description="a string or a list of strings")
    model: str | None = Field(None, description="a served space (default: the server's default space)")
    encoding_format: EncodingFormat = Field("float", description="base64: little-endian float32 bytes")
    dimensions: int | None = Field(None, description="must equal the space's dimension when given")
    user: str | None = Field(None, description="accepted for compatibility; not stored")
    modality: Literal["text", "image", "audio"] | None = Field(None, description="modality of every input; "
                                                                                  "default: text, or a data URI's type")
    mixing: Mixing | None = Field(None, description="preset, factors, off, weights")


def _as_input(text: str, modality: str | None) -> dict[str, str]:
    if modality is None:
        kind = text[5:].split("/", 1)[0].lower() if text.startswith("data:") else "text"
        modality = kind if kind in ("image", "audio") else "text"
    return {modality: text}


@router.post("/embeddings", summary="OpenAI-compatible embeddings")
async def embeddings(body: EmbeddingsRequest, engine: EngineDep, settings: SettingsDep,
                     metrics: MetricsDep, ticket: TicketDep) -> VectorResponse:
    texts = [body.input] if isinstance(body.input, str) else body.input
    if any(not isinstance(t, str) for t in texts):
        raise InvalidInput("token-id inputs are not supported: send strings")
    space = engine.space(body.model)
    if body.dimensions is not None and body.dimensions != space.dim:
        raise DimensionError(f"space {space.name!r} is {space.dim}-d; 'dimensions' cannot change that")
    inputs = await decode(parse_inputs, [_as_input(t, body.modality) for t in texts], settings, metrics, ticket)
    result = await engine.embed_inputs(space, inputs, body.mixing)
    data: list[dict[str, Any]] = [
        {"object": "embedding", "index": i, "embedding": encode_vector(v, body.encoding_format)}
        for i, v in enumerate(result.vectors)
    ]
    # No tokenizer is shared by a multimodal space, so there are no tokens to count: usage is zero.
    return VectorResponse({"object": "list", "data": data, "model": space.name, "fingerprint": result.fingerprint,
                         "usage": {"prompt_tokens": 0, "total_tokens": 0}})
