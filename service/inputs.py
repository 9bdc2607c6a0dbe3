"""Request inputs -> `(modality, decoded item)`, every failure naming the index of its input.

An input is a plain string (text) or one of `{"text": str}`, `{"image": str}`, `{"audio": str}`,
`{"vector": [float, ...]}`. Media strings are base64 or data URIs (`data:image/png;base64,...`).
http(s) URLs only when `allow_urls` is on: fetched with a timeout and a byte cap, through a connection
that refuses loopback, private, link-local and other non-public addresses (checked on the resolved
addresses of every hop, so a redirect or a DNS name cannot lead there either).
"""

from __future__ import annotations

import base64
import binascii
import http.client
import ipaddress
import mimetypes
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from functools import lru_cache
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator

from bonds.errors import FreeBindError, MediaTooLargeError, UnsupportedMediaError
from bonds.media import decode_audio, decode_image, decode_text
from service.engine import VECTOR
from service.errors import InvalidInput, TooManyItems
from service.settings import Settings


def _valid_unicode(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # JSON "\ud800" parses, but SQLite and every response would fail on it
        raise ValueError("not valid Unicode: it holds a lone surrogate") from None
    return value


UnicodeText = Annotated[str, AfterValidator(_valid_unicode)]
"""A string field that is stored or echoed back (ids): refused at validation when it cannot be encoded."""

SHAPES = 'an input is a string or one of {"text": ...}, {"image": ...}, {"audio": ...}, {"vector": [...]}'


def parse_inputs(raw: Sequence[Any], settings: Settings) -> list[tuple[str, Any]]:
    """Every input decoded, or the first failure raised with `index` set and all failures in `items`."""
    return _each(raw, settings, parse_input)


def parse_uploads(files: Sequence[tuple[str | None, bytes]], settings: Settings) -> list[tuple[str, Any]]:
    """Uploaded files as `(modality or content type, bytes)`, decoded like `parse_inputs`."""
    return _each(files, settings, lambda file, s: (_upload_modality(file[0]), decode_media(_upload_modality(file[0]), file[1], s)))


def upload_type(content_type: str | None, filename: str | None) -> str | None:
    """A file's declared content type, or the one its name implies when the client declared none of use:
    curl sends .wav, .flac and .ogg files as application/octet-stream."""
    if content_type and not content_type.startswith("application/octet-stream"):
        return content_type
    return mimetypes.guess_type(filename or "")[0] or content_type


def _upload_modality(declared: str | None) -> str:
    kind = (declared or "").split("/")[0].strip().lower()
    if kind not in ("text", "image", "audio"):
        raise UnsupportedMediaError(f"cannot tell the modality of a file of type {declared!r}: send image/*, audio/* or "
                                    "text/plain, or set the 'modality' field")
    return kind


def _each(raw: Sequence[Any], settings: Settings, parse) -> list[tuple[str, Any]]:
    if len(raw) == 0:
        raise InvalidInput("no inputs: send at least one")
    if len(raw) > settings.max_items:
        raise TooManyItems(f"{len(raw)} inputs in one request; the limit is {settings.max_items} (FREEBIND_MAX_ITEMS)")
    parsed, errors = [], []
    for i, entry in enumerate(raw):
        try:
            parsed.append(parse(entry, settings))
        except FreeBindError as exc:
            exc.index = i
            errors.append(exc)
    if errors:
        first = errors[0]
        if len(errors) > 1:
            first.items = [{"index": e.index, "type": e.kind, "detail": e.message} for e in errors[:50]]
        raise first
    return parsed


def parse_input(entry: Any, settings: Settings) -> tuple[str, Any]:
    if isinstance(entry, str):
        return "text", decode_text(entry, settings.media_limits())
    if not isinstance(entry, dict) or len(entry) != 1:
        raise InvalidInput(SHAPES)
    ((kind, value),) = entry.items()
    if kind == "text":
        return "text", decode_text(value, settings.media_limits())
    if kind in ("image", "audio"):
        return kind, decode_media(kind, media_bytes(kind, value, settings), settings)
    if kind == VECTOR:
        return VECTOR, parse_vector(value)
    raise InvalidInput(f"unknown input kind {kind!r}; {SHAPES}")


def decode_media(modality: str, data: bytes, settings: Settings) -> Any:
    limits = settings.media_limits()
    if modality == "image":
        return decode_image(data, limits)
    if modality == "audio":
        return decode_audio(data, limits)
    if modality == "text":
        try:
            return decode_text(data.decode("utf-8"), limits)
        except UnicodeDecodeError:
            raise InvalidInput("text is not valid UTF-8") from None
    raise InvalidInput(f"unknown modality {modality!r}; valid: text, image, audio")


def parse_vector(value: Any) -> np.ndarray:
    if not isinstance(value, list) or not value or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in value):
        raise InvalidInput("a vector input is a non-empty list of numbers")
    try:
        vector = np.asarray(value, dtype=np.float32)
    except OverflowError:  # an integer literal too large for any float
        raise InvalidInput("a vector input must hold finite numbers") from None
    if not np.isfinite(vector).all():
        raise InvalidInput("a vector input must hold finite numbers")
    return vector


def media_bytes(modality: str, value: Any, settings: Settings) -> bytes:
    if not isinstance(value, str):
        raise InvalidInput(f"{modality} must be a string: base64 or a data URI")
    if value.startswith("data:"):
        return _data_uri(modality, value)
    if value.startswith(("http://", "https://")):
        if not settings.allow_urls:
            raise InvalidInput("URL inputs are off on this server; send base64 or a data URI (FREEBIND_ALLOW_URLS)")
        return fetch(value, settings)
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


# --- URL inputs ----------------------------------------------------------------------------------------


def _public_only(address: tuple[str, int], timeout: float | None, source_address=None) -> socket.socket:
    """`socket.create_connection` that refuses any host whose addresses include a non-public one."""
    host, port = address
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0])
        ip = getattr(ip, "ipv4_mapped", None) or ip
        if not ip.is_global or ip.is_multicast:
            raise InvalidInput(f"URL host {host!r} resolves to a non-public address; refused")
    last: OSError | None = None
    for family, kind, proto, _, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last or OSError(f"cannot connect to {host}")


@lru_cache(maxsize=4)
def _connection(base: type, allow_private: bool) -> type:
    class Guarded(base):
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            if not allow_private:
                self._create_connection = _public_only  # http.client's own hook for opening the socket

    return Guarded


@lru_cache(maxsize=2)
def _opener(allow_private: bool) -> urllib.request.OpenerDirector:
    """Only http(s), no proxies from the environment, no file:/ftp: (a redirect cannot reach them)."""

    class HTTP(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(_connection(http.client.HTTPConnection, allow_private), req)

    class HTTPS(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(_connection(http.client.HTTPSConnection, allow_private), req, context=self._context)

    opener = urllib.request.OpenerDirector()
    for handler in (HTTP(), HTTPS(), urllib.request.HTTPRedirectHandler(), urllib.request.HTTPDefaultErrorHandler(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


def fetch(url: str, settings: Settings) -> bytes:
    """The body at `url`, within `url_timeout_s` overall and `url_max_bytes`."""
    limit, deadline = settings.url_max_bytes, time.monotonic() + settings.url_timeout_s
    request = urllib.request.Request(url, headers={"User-Agent": "freebind"})
    try:
        with _opener(settings.allow_private_urls).open(request, timeout=settings.url_timeout_s) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise MediaTooLargeError(f"URL body is {declared} bytes; the limit is {limit} (FREEBIND_URL_MAX_BYTES)")
            chunks, size = [], 0
            while chunk := response.read(65536):
                size += len(chunk)
                if size > limit:
                    raise MediaTooLargeError(f"URL body exceeds {limit} bytes (FREEBIND_URL_MAX_BYTES)")
                if time.monotonic() > deadline:
                    raise InvalidInput(f"fetching the URL took longer than {settings.url_timeout_s:g} s")
                chunks.append(chunk)
            return b"".join(chunks)
    except urllib.error.HTTPError as exc:
        raise InvalidInput(f"fetching the URL failed: HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason if isinstance(exc.reason, FreeBindError | str) else type(exc.reason).__name__
        if isinstance(reason, FreeBindError):
            raise reason from None
        raise InvalidInput(f"fetching the URL failed: {reason}") from None
    except (TimeoutError, OSError, http.client.HTTPException) as exc:
        raise InvalidInput(f"fetching the URL failed: {type(exc).__name__}") from None
