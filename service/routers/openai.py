"""`POST /v1/embeddings`, shaped like OpenAI's, so OpenAI clients work unchanged.

`model` names a served space; `input` is a string or a list of strings. Media go in as data URIs
(`data:image/png;base64,...`, `data:audio/wav;base64,...`), recognised by their media type, or as
base64 with `modality` set. Extra fields beyond OpenAI's: `modality` and `mixing`. Token-id inputs
are refused: a space embeds text, not one tokenizer's ids. `usage` counts the text inputs' tokens with
the space's text tokenizer where it has one. `GET /v1/models` lists the served spaces.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import anyio
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from bonds.errors import DimensionError
from bonds.mixing import Mixing
from bonds.space import Space
from service.deps import EngineDep, MetricsDep, SettingsDep, TicketDep
from service.errors import InvalidInput
from service.inputs import decode, parse_inputs
from service.responses import EncodingFormat, VectorResponse, encode_vector

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
        raise InvalidInput("token-id inputs are not supported: send strings (LangChain's OpenAIEmbeddings sends "
                           "token ids unless made with check_embedding_ctx_length=False)")
    space = engine.space(body.model)
    if body.dimensions is not None and body.dimensions != space.dim:
        raise DimensionError(f"space {space.name!r} is {space.dim}-d; 'dimensions' cannot change that")
    inputs = await decode(parse_inputs, [_as_input(t, body.modality) for t in texts], settings, metrics, ticket)
    result = await engine.embed_inputs(space, inputs, body.mixing)
    data: list[dict[str, Any]] = [
        {"object": "embedding", "index": i, "embedding": encode_vector(v, body.encoding_format)}
        for i, v in enumerate(result.vectors)
    ]
    words = [t for t, m in zip(texts, result.modalities, strict=True) if m == "text"]
    tokens = await anyio.to_thread.run_sync(count_tokens, space, words) if words else 0
    return VectorResponse({"object": "list", "data": data, "model": space.name, "fingerprint": result.fingerprint,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def count_tokens(space: Space, texts: Sequence[str]) -> int:
    """Tokens of `texts` by the first of the space's text encoders that has a tokenizer (the base comes
    first); 0 when none has. Media have no tokens: a multimodal space shares no tokenizer across them."""
    for encoder_space in space.encoder_spaces().values():
        if "text" in encoder_space.modalities:
            counts = encoder_space.encoder.count_tokens(texts)
            if counts is not None:
                return sum(counts)
    return 0


@router.get("/models", summary="Served spaces, as OpenAI's model list")
async def models(engine: EngineDep, request: Request) -> dict[str, Any]:
    engine.space()  # still loading: 503, not an empty list that looks final
    created = int(getattr(request.app.state, "started_at", 0))
    return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "freebind"}
                                       for name in engine.spaces]}
