"""The service's one settings object: every field is also an environment variable `FREEBIND_<FIELD>`.

Built by `get_settings(**overrides)` and passed into `create_app(settings)`; nothing reads the
environment at import, so tests and the CLI build as many differently configured apps as they like.
Lists (`FREEBIND_SPACES`, `FREEBIND_API_KEYS`) take JSON (`'["a", "b"]'`) or commas (`a,b`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bonds.media import MediaLimits


def _as_list(value: Any) -> list[str]:
    """JSON list, comma-separated string, or a list whose entries are either (as click passes env vars)."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return _as_list(json.loads(text))
        return [part.strip() for part in text.split(",") if part.strip()]
    return [part for entry in value for part in _as_list(entry if isinstance(entry, str) else str(entry))]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FREEBIND_", frozen=True, extra="forbid")

    # --- what is served ----------------------------------------------------------------------------
    spaces: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["starter_e5"], description="space names or description files to load"
    )
    default_space: str | None = Field(None, description="space of requests that name none")
    models_root: Path | None = Field(None, description="folder that ${models_root} in descriptions refers to")
    device: str | None = Field(None, description="torch device for encoders and bonds (cpu, cuda, cuda:1)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="precision encoders compute in: auto = bfloat16 on CUDA, float32 on CPU")
    # one pool for every encoder: resizing images and audio features while the models compute
    preprocess_workers: int | None = Field(None, ge=1, le=256, description="threads preparing items for the "
                                           "models (default: one per core, at most 16)")
    # torch's default is one intra-op thread per core; when request threads (decoding, JSON) or other
    # processes compete for those cores, its spinning threads slow a forward pass several-fold
    # (measured 10x for MiniLM on a busy 2-core machine): 1 is the safe choice on small shared hosts.
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads (torch's default: one per core)")
    data_dir: Path = Field(Path("data"), description="where collections are stored")
    collections: bool = Field(True, description="keep collections (/collections, /search); off: those answer 501, "
                              "for a process whose collections another one keeps")
    milvus_uri: str | None = Field(None, description="Milvus for collections with index backend 'milvus': a "
                                   "milvus-lite file (e.g. data/milvus.db) or http://host:19530; unset: none")
    milvus_token: SecretStr = Field(SecretStr(""), description="Milvus token (user:password or an API key)")

    # --- server ------------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="interface to listen on")
    port: int = Field(8000, ge=0, le=65535, description="TCP port")
    log_level: str = Field("info", description="debug, info, warning, error")
    # uvicorn's own default (5 s) closes connections a client or load balancer still holds: the next
    # request on one races the close and fails. Above common balancers' idle timeouts (60 s) instead.
    keep_alive_s: int = Field(75, ge=1, description="seconds an idle client connection stays open")
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="accepted Bearer keys; empty: no authentication"
    )
    playground: bool = Field(True, description="serve the playground page at /")

    # --- batching and back-pressure ----------------------------------------------------------------
    max_batch_size: int | None = Field(None, ge=1, description="items per model call, any modality")
    # 0: no idle wait; items that arrive while the model runs still form the next batch. Measured on
    # the tiny encoder + 8 ms/call: 5 ms only added latency alone and did not raise throughput under load.
    max_wait_ms: float = Field(0.0, ge=0, description="how long an idle model waits for a batch to fill")
    max_queue: int = Field(2048, ge=1, description="items waiting or running at once; more is refused with 429")
    retry_after_s: int = Field(1, ge=0, description="Retry-After sent with 429")
    max_concurrency: int = Field(64, ge=1, description="space evaluations running at once (threads)")
    warmup: bool = Field(True, description="run one tiny encode per space and modality before reporting ready")

    # --- request limits ----------------------------------------------------------------------------
    max_body_bytes: int = Field(32 * 2**20, ge=1, description="request body limit (413 before parsing)")
    max_items: int = Field(256, ge=1, description="inputs per request")
    max_text_chars: int = Field(20_000, ge=1, description="characters per text input")
    max_label_descriptions: int = Field(10_000, ge=1, description="/classify: inline label descriptions per request "
                                        "(each is embedded; ImageNet's 1000 names x 10 templates fit)")
    max_image_pixels: int = Field(40_000_000, ge=1, description="pixels per image, checked before decoding")
    max_audio_seconds: float = Field(600.0, gt=0, description="seconds per audio input")
    # --- admission by cost (service.admission): estimated from headers, before anything is decoded ------
    # 16 384: FREEBIND_MAX_LABEL_DESCRIPTIONS (10 000) plus 256 of the longest texts fit in one request
    max_request_work: int = Field(16_384, ge=1, description="estimated work of one request, in units of one short "
                                  "text's encode; more: 413")
    max_work_in_flight: int = Field(32_768, ge=1, description="estimated work of all requests in flight; more: 429")
    max_request_memory_mb: int = Field(512, ge=1, description="estimated memory of one request's decoded inputs "
                                       "(3 bytes a pixel, 4 a sample per channel + 4 for the mono mix); more: 413")
    max_memory_in_flight_mb: int = Field(1024, ge=1, description="estimated decoded memory of all requests in "
                                         "flight; more: 429")
    # every search hit carries its item's metadata: 16 KiB x top_k 1000 is already a 16 MB answer
    max_metadata_bytes: int = Field(16 * 1024, ge=2, description="an item's metadata as compact UTF-8 JSON "
                                    "(larger: 413)")

    # --- URL inputs (off: only inline base64 / data URIs) ---------------------------------------
    allow_urls: bool = Field(False, description="let image/audio inputs be http(s) URLs fetched by the server")
    url_timeout_s: float = Field(10.0, gt=0, description="total time of one URL fetch, waiting for a fetch thread "
                                 "included")
    url_max_fetches: int = Field(8, ge=1, description="URL fetches at once, on threads of their own (never the ones "
                                 "decoding and search use); more wait, within their deadline")
    url_max_bytes: int = Field(20 * 2**20, ge=1, description="bytes one URL fetch may return")
    allow_private_urls: bool = Field(False, description="let URLs reach loopback/private/link-local addresses")

    @field_validator("spaces", mode="before")
    @classmethod
    def _spaces(cls, value: Any) -> list[str]:
        return _as_list(value)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys(cls, value: Any) -> list[str]:
        if isinstance(value, list | tuple) and all(isinstance(v, SecretStr) for v in value):
            return list(value)
        return _as_list(value)

    @field_validator("spaces")
    @classmethod
    def _some_space(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one space must be served")
        return value

    def media_limits(self) -> MediaLimits:
        return MediaLimits(self.max_image_pixels, self.max_audio_seconds, self.max_text_chars)


# defaults worth words rather than a bare value (None, an empty list, an encoder's own choice)
_SHOWN_DEFAULTS = {"default_space": "the first space", "models_root": "none", "device": "cpu",
                   "torch_threads": "torch's",
                   "milvus_uri": "none", "milvus_token": "none", "api_keys": "none (open)",
                   "max_batch_size": "the encoder's"}


def setting_rows() -> list[dict[str, str]]:
    """Every setting as `freebind settings`, `serve --help` and the user's guide show it: field, env, default, help."""
    rows = []
    for field, info in Settings.model_fields.items():
        default = info.get_default(call_default_factory=True)
        if field in _SHOWN_DEFAULTS:
            shown = _SHOWN_DEFAULTS[field]
        elif isinstance(default, bool):
            shown = "on" if default else "off"
        elif isinstance(default, list):
            shown = ",".join(map(str, default))
        else:
            shown = str(default)
        rows.append(
            {"field": field, "env": f"FREEBIND_{field.upper()}", "default": shown, "help": info.description or ""})
    return rows


def get_settings(**overrides: Any) -> Settings:
    """Settings from the environment (read now, not at import), with `overrides` on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
