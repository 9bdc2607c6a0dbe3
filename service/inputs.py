"""Request inputs -> `(modality, decoded item)`, every failure naming the index of its input.

An input is a plain string (text) or one of `{"text": str}`, `{"image": str}`, `{"audio": str}`,
`{"vector": [float, ...]}`. Media strings are base64 or data URIs (`data:image/png;base64,...`), or
http(s) URLs when `allow_urls` is on (service.fetch: a hard deadline, a byte cap, public addresses only).

Inputs are taken in three steps, so that what decoding will cost is admitted before it is spent:
staged (shapes, base64, text limits, URL bodies), priced from their headers and reserved against the
request's ticket (service.admission), then decoded. Routers call `decode`, which fetches URLs on the
fetch threads first and runs the rest off the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import mimetypes
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import anyio
import numpy as np
from pydantic import AfterValidator

from bonds.errors import FreeBindError, UnsupportedMediaError
from bonds.media import decode_audio, decode_image, decode_text
from bonds.plan import VECTOR
from service.admission import Cost, Ticket, input_cost
from service.errors import InvalidInput, TooLarge, TooManyItems
from service.fetch import fetch
from service.metrics import Metrics
from service.settings import Settings


def _valid_unicode(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # JSON "\ud800" parses, but SQLite and every response would fail on it
        raise ValueError("not valid Unicode: it holds a lone surrogate") from None
    return value


UnicodeText = Annotated[str, AfterValidator(_valid_unicode)]
"""A string field that is stored or echoed back (ids): refused at validation when it cannot be encoded."""

METADATA_DEPTH = 32  # levels of nesting in an item's metadata; SQLite's JSON functions stop at 1000

SHAPES = 'an input is a string or one of {"text": ...}, {"image": ...}, {"audio": ...}, {"vector": [...]}'


def json_field(text: str, what: str, error: type[FreeBindError] = InvalidInput) -> Any:
    """A JSON form field (multipart), its failures as `error` naming the field. NaN and Infinity are
    refused: Python reads them, but strict JSON and SQLite's JSON functions do not."""
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    try:
        return json.loads(text, parse_constant=refuse)
    except RecursionError:  # the C scanner's own limit: a 100 000-deep '[[[...' must not become a 500
        raise error(f"the {what!r} field is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError is one
        raise error(f"the {what!r} field is not valid JSON: {exc}") from None


def check_metadata(metadata: Any, settings: Settings, what: str) -> dict[str, Any]:
    """An item's metadata as it may be stored: an object of finite numbers, at most METADATA_DEPTH deep,
    valid Unicode, and at most `max_metadata_bytes` as JSON. It comes back with every search hit and
    filters read it through SQLite, which refuses NaN and Infinity (every filtered search would fail)."""
    if not isinstance(metadata, dict):
        raise InvalidInput(f"{what}: metadata must be a JSON object")
    _check_values(metadata, what, 1)
    try:
        size = len(json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput(f"{what}: metadata is not valid Unicode: it holds a lone surrogate") from None
    if size > settings.max_metadata_bytes:
        raise TooLarge(f"{what}: metadata is {size} bytes as JSON; the limit is {settings.max_metadata_bytes} "
                              "(FREEBIND_MAX_METADATA_BYTES)")
    return metadata


def _check_values(value: Any, what: str, depth: int) -> None:
    if depth > METADATA_DEPTH:
        raise InvalidInput(f"{what}: metadata is nested more than {METADATA_DEPTH} levels deep")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"{what}: metadata values must be finite numbers, not {value!r}")
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for child in children:
        _check_values(child, what, depth + 1)


def upload_type(content_type: str | None, filename: str | None) -> str | None:
    """A file's declared content type, or the one its name implies when the client declared none of use:
    curl sends .wav, .flac and .ogg files as application/octet-stream."""
    if content_type and not content_type.startswith("application/octet-stream"):
        return content_type
    return mimetypes.guess_type(filename or "")[0] or content_type


def _upload_modality(declared: str | None) -> str:
    kind = (declared or "").split("/")[0].strip().lower()
    if kind not in ("text", "image", "audio"):
        raise UnsupportedMediaError(f"cannot tell the modality of a file of type {declared!r}: send image/*, "
                                    "audio/* or text/plain, or set the 'modality' field")
    return kind


def parse_inputs(raw: Sequence[Any], settings: Settings, ticket: Ticket | None = None,
                 fetched: Mapping[int, Any] | None = None) -> list[tuple[str, Any]]:
    """Every input decoded, or the first failure raised with `index` set and all failures in `items`.
    With a `ticket`, the inputs' estimated cost is reserved before anything is decoded; `fetched`: the
    bodies (or fetch errors) of URL inputs by index, fetched already (else they are fetched here)."""
    fetched = fetched or {}
    return _each(raw, settings, ticket, lambda i, entry: stage_input(entry, settings, fetched.get(i)))


def parse_uploads(files: Sequence[tuple[str | None, bytes]], settings: Settings, ticket: Ticket | None = None,
                  fetched: Mapping[int, Any] | None = None) -> list[tuple[str, Any]]:
    """Uploaded files as `(modality or content type, bytes)`, decoded like `parse_inputs` (`fetched` is
    never used: files are no URLs; it is taken so that `decode` calls both alike)."""
    return _each(files, settings, ticket, lambda i, file: _stage_upload(file, settings))


async def decode(parse, raw: Sequence[Any], settings: Settings, metrics: Metrics,
                 ticket: Ticket | None = None) -> list[tuple[str, Any]]:
    """`parse(raw, ...)` (parse_inputs or parse_uploads) for a router. Decoding media is CPU work: off the
    event loop; text and vectors need none, and a thread hop would cost more than checking them here.
    URLs are fetched before, on the fetch threads, so no thread of the shared pool waits for an upstream."""
    with metrics.time("decode"):
        if parse is parse_inputs and all(_plain(entry) for entry in raw):
            return parse(raw, settings, ticket)
        fetched = await _fetch_urls(raw, settings, ticket) if parse is parse_inputs else {}
        return await anyio.to_thread.run_sync(parse, raw, settings, ticket, fetched)


def _plain(entry: Any) -> bool:
    return isinstance(entry, str) or (isinstance(entry, dict) and len(entry) == 1
                                      and ("text" in entry or "vector" in entry))


async def _fetch_urls(raw: Sequence[Any], settings: Settings, ticket: Ticket | None) -> dict[int, Any]:
    """Bodies of the URL inputs by index, fetched together; a failed fetch's error in its body's place."""
    if ticket is None or not settings.allow_urls:
        return {}
    urls = {i: value for i, entry in enumerate(raw) if isinstance(entry, dict) and len(entry) == 1
            for kind, value in entry.items()
            if kind in ("image", "audio") and isinstance(value, str) and value.startswith(("http://", "https://"))}
    bodies = await asyncio.gather(*(ticket.fetch(url) for url in urls.values()), return_exceptions=True)
    return dict(zip(urls, bodies, strict=True))


def _each(raw: Sequence[Any], settings: Settings, ticket: Ticket | None, stage) -> list[tuple[str, Any]]:
    if len(raw) == 0:
        raise InvalidInput("no inputs: send at least one")
    if len(raw) > settings.max_items:
        raise TooManyItems(f"{len(raw)} inputs in one request; the limit is {settings.max_items} (FREEBIND_MAX_ITEMS)")
    staged = _every(raw, stage)
    if ticket is not None:  # before a pixel is decoded: a refused request costs nothing more
        ticket.reserve(sum((input_cost(modality, payload, settings) for modality, payload in staged), Cost()))
    return _every(staged, lambda _, item: (item[0], _decoded(item[0], item[1], settings)))


def _every(entries: Sequence[Any], step) -> list[Any]:
    """`step(i, entry)` of every entry, or the first failure raised with `index` set and all in `items`."""
    done, errors = [], []
    for i, entry in enumerate(entries):
        try:
            done.append(step(i, entry))
        except FreeBindError as exc:
            exc.index = i
            errors.append(exc)
    if errors:
        first = errors[0]
        if len(errors) > 1:
            first.items = [{"index": e.index, "type": e.kind, "detail": e.message} for e in errors[:50]]
        raise first
    return done


def stage_input(entry: Any, settings: Settings, fetched: Any = None) -> tuple[str, Any]:
    """An input checked and in hand, not decoded: `(modality, text | media bytes | vector)`."""
    if isinstance(entry, str):
        return "text", decode_text(entry, settings.media_limits())
    if not isinstance(entry, dict) or len(entry) != 1:
        raise InvalidInput(SHAPES)
    ((kind, value),) = entry.items()
    if kind == "text":
        return "text", decode_text(value, settings.media_limits())
    if kind in ("image", "audio"):
        return kind, media_bytes(kind, value, settings, fetched)
    if kind == VECTOR:
        return VECTOR, parse_vector(value)
    raise InvalidInput(f"unknown input kind {kind!r}; {SHAPES}")


def _stage_upload(file: tuple[str | None, bytes], settings: Settings) -> tuple[str, Any]:
    declared, data = file
    kind = _upload_modality(declared)
    if kind != "text":
        return kind, data
    try:
        return kind, decode_text(data.decode("utf-8"), settings.media_limits())
    except UnicodeDecodeError:
        raise InvalidInput("text is not valid UTF-8") from None


def _decoded(modality: str, payload: Any, settings: Settings) -> Any:
    if modality == "image":
        return decode_image(payload, settings.media_limits())
    if modality == "audio":
        return decode_audio(payload, settings.media_limits())
    return payload  # text and vectors were checked when staged


def parse_vector(value: Any) -> np.ndarray:
    numbers = isinstance(value, list) and all(isinstance(x, int | float) and not isinstance(x, bool) for x in value)
    if not numbers or not value:
        raise InvalidInput("a vector input is a non-empty list of numbers")
    try:
        vector = np.asarray(value, dtype=np.float32)
    except OverflowError:  # an integer literal too large for any float
        raise InvalidInput("a vector input must hold finite numbers") from None
    if not np.isfinite(vector).all():
        raise InvalidInput("a vector input must hold finite numbers")
    return vector


def media_bytes(modality: str, value: Any, settings: Settings, fetched: Any = None) -> bytes:
    """The bytes of a media string; `fetched`: a URL's body (or its fetch's error), fetched already."""
    if not isinstance(value, str):
        raise InvalidInput(f"{modality} must be a string: base64 or a data URI")
    if value.startswith("data:"):
        return _data_uri(modality, value)
    if value.startswith(("http://", "https://")):
        if not settings.allow_urls:
            raise InvalidInput("URL inputs are off on this server; send base64 or a data URI (FREEBIND_ALLOW_URLS)")
        if isinstance(fetched, BaseException):
            raise fetched
        return fetched if fetched is not None else fetch(value, settings)
    return _base64(value)


def _data_uri(modality: str, uri: str) -> bytes:
    header, comma, payload = uri[5:].partition(",")
    if not comma:
        raise InvalidInput("a data URI needs a ',' between its header and its data")
    params = header.split(";")
    media_type = params[0].strip().lower()
    if media_type and media_type.split("/")[0] not in (modality, "application"):
        raise UnsupportedMediaError(f"data URI holds {media_type!r}, but this input is {modality}")
    if "base64" in params[1:]:
        return _base64(payload)
    return urllib.parse.unquote_to_bytes(payload)


def _base64(text: str) -> bytes:
    compact = "".join(text.split())
    compact += "=" * (-len(compact) % 4)
    try:
        if "-" in compact or "_" in compact:
            return base64.urlsafe_b64decode(compact)
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("media is not valid base64 (nor a data URI)") from None
