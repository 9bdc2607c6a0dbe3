"""FreeBind's library: multimodal embedding spaces, bonded experts, per-call mixing.

    from bonds import load_space
    space = load_space("starter_e5")                                   # a shipped space (list_spaces())
    space.embed("text", ["a dog", "ein Hund"], {"preset": "multilingual"})  # (2, 384) unit rows
    space.embed("image", ["dog.jpg"])                                  # paths, bytes or PIL images
    space.embed("audio", ["bark.wav"])                                 # paths, bytes or Audio

The names below load on first use (PEP 562), so `import bonds.errors` stays light: no torch, no models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> module that defines it
_EXPORTS = {
    "load_space": "bonds.description",
    "list_spaces": "bonds.description",
    "create_encoder": "bonds.encoders",
    "list_encoders": "bonds.encoders",
    "Audio": "bonds.encoders.base",
    "Encoder": "bonds.encoders.base",
    "Mixing": "bonds.mixing",
    "Space": "bonds.space",
    "Embedding": "bonds.space",
    "FreeBindError": "bonds.errors",
}
__all__ = ["Audio", "Embedding", "Encoder", "FreeBindError", "Mixing", "Space", "create_encoder", "list_encoders",
           "list_spaces", "load_space"]  # the keys of _EXPORTS (a literal, for linters and type checkers)

if TYPE_CHECKING:
    from bonds.description import list_spaces, load_space
    from bonds.encoders import create_encoder, list_encoders
    from bonds.encoders.base import Audio, Encoder
    from bonds.errors import FreeBindError
    from bonds.mixing import Mixing
    from bonds.space import Embedding, Space


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bonds' has no attribute {name!r}; public names: {', '.join(__all__)}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
