"""The encoder registry: every encoder the library can build, by name."""

from __future__ import annotations

from typing import Any

from bonds.registry import Registry

ENCODERS: Registry[Any] = Registry("encoder")
