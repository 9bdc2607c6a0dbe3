"""Typed errors of the library.

Every error a caller can cause is a subclass of `FreeBindError` with a stable `kind`; the service maps
kinds to HTTP statuses in one table, so no HTTP code lives here.
"""

from __future__ import annotations


class FreeBindError(Exception):
    """Base of every error the library raises on purpose."""

    kind = "freebind_error"

    def __init__(self, message: str, *, index: int | None = None):
        super().__init__(message)
        self.message = message
        self.index = index  # position of the offending item in a batch, when there is one

    def __str__(self) -> str:
        if self.index is None:
            return self.message
        return f"item {self.index}: {self.message}"


class UnknownNameError(FreeBindError, KeyError):
    """A registry lookup for a name that is not registered."""

    kind = "unknown_name"

    def __str__(self) -> str:  # KeyError would repr() the message otherwise
        return FreeBindError.__str__(self)


class MixingError(FreeBindError, ValueError):
    """A mixing names an unknown bond/modality/preset or a factor out of range."""

    kind = "invalid_mixing"


class ModalityError(FreeBindError, ValueError):
    """A space was asked for a modality it cannot embed."""

    kind = "unsupported_modality"


class CheckpointError(FreeBindError, ValueError):
    """A checkpoint folder is missing, corrupt, or does not fit where it is used."""

    kind = "invalid_checkpoint"


class DimensionError(FreeBindError, ValueError):
    """Vectors or projectors whose dimensions do not fit together."""

    kind = "dimension_mismatch"


class MediaError(FreeBindError, ValueError):
    """Media that cannot be decoded."""

    kind = "invalid_media"


class UnsupportedMediaError(MediaError):
    """Media of a format we do not decode."""

    kind = "unsupported_media"


class MediaTooLargeError(MediaError):
    """Media over a configured limit (pixels, seconds, bytes, characters)."""

    kind = "media_too_large"


class DescriptionError(FreeBindError, ValueError):
    """A space description file that cannot be built into a space."""

    kind = "invalid_description"
