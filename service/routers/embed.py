"""`POST /embed` (JSON inputs of any modality, mixed) and `POST /embed/upload` (multipart files).

The answer carries the space, its dimension, the resolved mixing and its fingerprint: vectors are
comparable only when fingerprints are equal. `enhance` pulls each query toward its nearest items of a
collection under the same mixing (ImageBind-LLM cache enhancement, `bonds.enhance.blend`).
"""

from __future__ import annotations

from typing import Any, Literal

import anyio
import numpy as np
from fastapi import APIRouter, File, Form, UploadFile
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bonds.errors import MixingError
from bonds.mixing import Mixing
from service import collections
from service.collections import Enhance
from service.deps import EngineDep, MetricsDep, SettingsDep, StoreDep, TicketDep
from service.engine import Embedded
from service.inputs import decode, json_field, parse_inputs, parse_uploads, upload_type
from service.responses import EncodingFormat, VectorResponse, encode_vector

router = APIRouter(tags=["embed"])


class EmbedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: list[Any] = Field(..., description='strings, or {"text"|"image"|"audio": str} or {"vector": [...]}',
                              examples=[[{"text": "a dog barking"}, {"image": "data:image/png;base64,..."}]])
    space: str | None = Field(None, description="served space (default: the server's default space)")
    mixing: Mixing | None = Field(None, description="preset, factors, off, weights; default: the space's own")
    encoding_format: EncodingFormat = Field("float", description="base64: little-endian float32 bytes")
    enhance: Enhance | None = Field(None, description="cache enhancement against a collection (`collection` required)")

    @field_validator("enhance")
    @classmethod
    def _names_its_collection(cls, enhance: Enhance | None) -> Enhance | None:
        if enhance is not None and enhance.collection is None:
            raise ValueError("enhance.collection: name the collection whose items pull the inputs toward them")
        if enhance is not None and enhance.return_neighbours:
            raise ValueError("enhance.return_neighbours: /embed answers vectors only; /search lists neighbours")
        return enhance


def answer(result: Embedded, vectors: np.ndarray, encoding_format: str, **extra: Any) -> VectorResponse:
    data = []
    for i, (modality, note) in enumerate(zip(result.modalities, result.notes, strict=True)):
        row: dict[str, Any] = {"index": i, "modality": modality,
                               "embedding": encode_vector(vectors[i], encoding_format)}
        if note:
            row["note"] = note
        data.append(row)
    body = {"space": result.space.name, "fingerprint": result.fingerprint, "dim": result.space.dim,
            "mixing": result.mixing.to_dict(), **extra, "data": data}
    return VectorResponse(body)  # not FastAPI's encoder, which would walk every number again


@router.post("/embed", summary="Embed inputs of any modality into a space, under a per-request mixing")
async def embed(body: EmbedRequest, engine: EngineDep, store: StoreDep, settings: SettingsDep,
                metrics: MetricsDep, ticket: TicketDep) -> VectorResponse:
    inputs = await decode(parse_inputs, body.inputs, settings, metrics, ticket)
    result = await engine.embed_inputs(body.space, inputs, body.mixing)
    if body.enhance is None:
        return answer(result, result.vectors, body.encoding_format)
    with metrics.time("search"):
        vectors = await anyio.to_thread.run_sync(collections.enhance_embedded, store, engine, result, body.enhance)
    return answer(result, vectors, body.encoding_format, enhance=body.enhance.model_dump(exclude={"return_neighbours"}))


@router.post("/embed/upload", summary="Embed uploaded files (multipart/form-data)")
async def embed_upload(
    engine: EngineDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    ticket: TicketDep,
    files: list[UploadFile] = File(..., description="one or more files; modality from each file's content type"),
    modality: Literal["text", "image", "audio"] | None = Form(None, description="modality of every file"),
    space: str | None = Form(None, description="served space (default: the server's default)"),
    mixing: str | None = Form(None, description="mixing as JSON, e.g. {\"preset\": \"multilingual\"}"),
    encoding_format: EncodingFormat = Form("float"),
) -> VectorResponse:
    uploads = [(modality or upload_type(file.content_type, file.filename), await file.read()) for file in files]
    inputs = await decode(parse_uploads, uploads, settings, metrics, ticket)
    result = await engine.embed_inputs(space, inputs, _mixing_field(mixing))
    return answer(result, result.vectors, encoding_format)


def _mixing_field(text: str | None) -> Mixing | None:
    if not text:
        return None
    try:
        return Mixing.model_validate(json_field(text, "mixing", MixingError))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(the whole value)"
        raise MixingError(f"the 'mixing' field: {where}: {first['msg']}") from None
