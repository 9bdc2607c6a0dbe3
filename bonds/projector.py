"""FreeBind's projector head and the mixture of heads a bond ships.

head: Linear(d_in, hidden) -> BatchNorm1d -> ReLU -> Linear(hidden, d_out) -> BatchNorm1d -> L2-normalise
mixture: every head's unit output is computed; `forward` returns their re-normalised mean,
`mean_of_heads` the plain mean (parallel bonds pool those across experts before normalising).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from bonds.errors import DimensionError

# The released bonds train one head per pseudo-data mode, in this order.
FREEBIND_MODES = ("mix", "A", "T", "V", "AT", "AV", "TV")


@dataclass(frozen=True)
class ProjectorConfig:
    d_in: int
    d_out: int
    hidden: int = 2048
    heads: tuple[str, ...] = ("mix",)

    def to_dict(self) -> dict:
        return {**asdict(self), "heads": list(self.heads)}

    @classmethod
    def from_dict(cls, data: dict) -> ProjectorConfig:
        return cls(int(data["d_in"]), int(data["d_out"]), int(data.get("hidden", 2048)), tuple(data["heads"]))


class ProjectorHead(nn.Module):
    """One FreeBind head. `mlps` indices match the released state dicts (0, 1, 3, 4)."""

    def __init__(self, d_in: int, d_out: int, hidden: int = 2048):
        super().__init__()
        self.mlps = nn.Sequential(
            nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, d_out), nn.BatchNorm1d(d_out)
        )
        for layer in (self.mlps[0], self.mlps[3]):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x_nd: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.mlps(x_nd), dim=-1)


class ProjectorMixture(nn.Module):
    """Several heads over one input space, named by the data mode each was trained on."""

    def __init__(self, config: ProjectorConfig):
        super().__init__()
        if not config.heads:
            raise ValueError("a projector mixture needs at least one head")
        self.config = config
        self.heads = nn.ModuleDict(
            {name: ProjectorHead(config.d_in, config.d_out, config.hidden) for name in config.heads})
        self.eval()

    @property
    def d_in(self) -> int:
        return self.config.d_in

    @property
    def d_out(self) -> int:
        return self.config.d_out

    def mean_of_heads(self, x_nd: torch.Tensor) -> torch.Tensor:
        """Mean of the heads' unit outputs, `(n, d_out)`, not re-normalised."""
        if x_nd.shape[-1] != self.d_in:
            raise DimensionError(f"projector expects {self.d_in}-d input, got {x_nd.shape[-1]}-d")
        return torch.stack([head(x_nd) for head in self.heads.values()]).mean(dim=0)

    def forward(self, x_nd: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.mean_of_heads(x_nd), dim=-1)

    @torch.inference_mode()
    def project(self, x_nd: np.ndarray, normalize: bool = True) -> np.ndarray:
        """numpy in, numpy out, eval mode, on the module's device."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        x = torch.as_tensor(np.asarray(x_nd, dtype=np.float32), device=device)
        out = self(x) if normalize else self.mean_of_heads(x)
        self.train(was_training)
        return out.float().cpu().numpy()

    def state_checksum(self) -> str:
        """sha256 of the weights (stable across processes), computed once per module."""
        return weights_checksum(self)


def weights_checksum(module: nn.Module) -> str:
    """sha256 over a module's state dict (names, dtypes, bytes); cached on the module.

    Checkpoint loading sets it from the manifest's verified hash, so large models are not hashed twice.
    """
    cached = getattr(module, "_weights_checksum", None)
    if cached is not None:
        return cached
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    module._weights_checksum = digest.hexdigest()
    return module._weights_checksum
