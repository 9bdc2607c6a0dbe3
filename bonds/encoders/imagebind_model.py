"""The ImageBind network (vision, text, audio), written so the official `imagebind_huge.pth` loads as is.

Module names reproduce the official state-dict keys (`modality_preprocessors.vision.rgbt_stem.proj.1.weight`,
`modality_trunks.audio.blocks.3.attn.bias_k`, `modality_heads.text.proj.1.weight`, ...), because a user's
checkpoint is the official file and `load_state_dict(strict=True)` is how we know it fits. Depth, thermal
and IMU are left out: the service embeds text, image and audio, and their keys are ignored on loading.

Layout (from the paper's code): a patch stem + class token + learned positions per modality, a pre-norm
transformer trunk on `nn.MultiheadAttention` (sequence-first, as the checkpoint was trained), a head that
takes the class token (vision, audio) or the end-of-text token (text) through LayerNorm + Linear, and a
postprocessor that L2-normalises and multiplies by a logit scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class ImageBindConfig:
    """Sizes of the three towers. Defaults are ImageBind-huge; `tiny()` is for tests."""

    out_dim: int = 1024
    vision_width: int = 1280
    vision_layers: int = 32
    vision_heads: int = 16
    vision_frames: int = 2  # an image is repeated into a 2-frame clip
    vision_kernel: tuple[int, int, int] = (2, 14, 14)
    image_size: int = 224
    text_width: int = 1024
    text_layers: int = 24
    text_heads: int = 16
    context_length: int = 77
    vocab_size: int = 49408
    audio_width: int = 768
    audio_layers: int = 12
    audio_heads: int = 12
    audio_kernel: int = 16
    audio_stride: int = 10  # overlapping patches over the spectrogram
    audio_mel_bins: int = 128
    audio_frames: int = 204
    audio_drop_path: float = 0.1  # stochastic depth in training; identity at inference

    @classmethod
    def huge(cls) -> ImageBindConfig:
        return cls()

    @classmethod
    def tiny(cls) -> ImageBindConfig:
        """Real input sizes (224 px, 128 x 204 fbank, 77 tokens) on towers a few thousand times smaller."""
        return cls(out_dim=16, vision_width=32, vision_layers=2, vision_heads=2, text_width=32, text_layers=2,
                   text_heads=2, audio_width=32, audio_layers=2, audio_heads=2)

    @classmethod
    def resolve(cls, config: str | dict[str, Any] | ImageBindConfig) -> ImageBindConfig:
        if isinstance(config, ImageBindConfig):
            return config
        if isinstance(config, str):
            if config not in ("huge", "tiny"):
                raise ValueError(f"unknown ImageBind config {config!r}; valid: 'huge', 'tiny', or a dict of sizes")
            return getattr(cls, config)()
        values = dict(config)
        if "vision_kernel" in values:
            values["vision_kernel"] = tuple(values["vision_kernel"])
        unknown = set(values) - set(asdict(cls()))
        if unknown:
            raise ValueError(f"unknown ImageBind config keys: {sorted(unknown)}")
        return cls(**values)


class DropPath(nn.Module):
    """Stochastic depth: drops a whole residual branch per sample while training."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class RepeatFrames(nn.Module):
    """Official `PadIm2Video(pad_type="repeat")`: an image (B, C, H, W) becomes a clip (B, C, T, H, W)."""

    def __init__(self, frames: int):
        super().__init__()
        self.frames = frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            x = x.unsqueeze(2)
        if x.shape[2] == 1:
            x = x.repeat(1, 1, self.frames, 1, 1)
        return x


class PatchStem(nn.Module):
    """Patchify with a strided convolution, flatten to tokens, optional LayerNorm (`PatchEmbedGeneric`)."""

    def __init__(self, proj: nn.Module, norm_layer: nn.Module | None = None):
        super().__init__()
        self.proj = proj
        self.norm_layer = norm_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(x).flatten(2).transpose(1, 2)  # B C (T) H W -> B L C
        return self.norm_layer(tokens) if self.norm_layer is not None else tokens


class PositionTable(nn.Module):
    """Holds the learned positions; the official helper module is called `pos_embedding_helper`."""

    def __init__(self, num_tokens: int, width: int):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.empty(1, num_tokens, width))


class PatchTokens(nn.Module):
    """Stem tokens with a class token in front and learned positions added (`RGBDTPreprocessor`).

    The stem lives under `rgbt_stem` for audio too: the official audio preprocessor subclasses the RGB one.
    """

    def __init__(self, stem: PatchStem, num_patches: int, width: int):
        super().__init__()
        self.rgbt_stem = stem
        self.cls_token = nn.Parameter(torch.empty(1, 1, width))
        self.pos_embedding_helper = PositionTable(num_patches + 1, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.rgbt_stem(x)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        pos = self.pos_embedding_helper.pos_embed
        if pos.shape[1] != tokens.shape[1]:
            raise ValueError(f"input gives {tokens.shape[1]} tokens; the model has positions for {pos.shape[1]}")
        return tokens + pos


class TextTokens(nn.Module):
    """Token + position embeddings, and the causal mask the checkpoint stores as a buffer."""

    def __init__(self, vocab_size: int, context_length: int, width: int):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.pos_embed = nn.Parameter(torch.empty(1, context_length, width))
        causal = torch.full((context_length, context_length), float("-inf")).triu(1)
        self.register_buffer("mask", causal)  # persistent: the official state dict has it

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(ids) + self.pos_embed


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm residual block; LayerNorm eps 1e-6 as in the official trunk."""

    def __init__(self, width: int, heads: int, add_bias_kv: bool, drop_path: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, bias=True, add_bias_kv=add_bias_kv)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm_1 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = Mlp(width, 4 * width)
        self.norm_2 = nn.LayerNorm(width, eps=1e-6)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        h = self.norm_1(x)
        x = x + self.drop_path(self.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0])
        return x + self.drop_path(self.mlp(self.norm_2(x)))


class Trunk(nn.Module):
    """Blocks over (L, B, D); vision alone has a LayerNorm before the first block."""

    def __init__(self, width: int, layers: int, heads: int, pre_norm: bool, add_bias_kv: bool, drop_path: float):
        super().__init__()
        # index 0 matches `pre_transformer_layer.0.*`; the official index 1 is a parameter-free rearrange
        self.pre_transformer_layer = nn.Sequential(nn.LayerNorm(width, eps=1e-6) if pre_norm else nn.Identity())
        # progressive stochastic depth, 0 at the first block (plain floats: this also runs on "meta")
        rates = [drop_path * i / (layers - 1) for i in range(layers)] if layers > 1 else [0.0] * layers
        self.blocks = nn.Sequential(*[Block(width, heads, add_bias_kv, rate) for rate in rates])

    def forward(self, tokens: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.pre_transformer_layer(tokens).transpose(0, 1)  # B L D -> L B D
        for block in self.blocks:
            x = block(x, attn_mask)
        return x.transpose(0, 1)


class SelectToken(nn.Module):
    def __init__(self, index: int):
        super().__init__()
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.index]


class SelectEndAndProject(nn.Module):
    """Text pooling: the features at the end-of-text token (the largest id of each row)."""

    def __init__(self, width: int, out_dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(width, eps=1e-6), nn.Linear(width, out_dim, bias=False))

    def forward(self, x: torch.Tensor, end_index: torch.Tensor) -> torch.Tensor:
        return self.proj(x[torch.arange(x.shape[0], device=x.device), end_index])


class Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(x, dim=-1)


class LogitScale(nn.Module):
    """`exp(log_logit_scale)` capped at 100; a parameter for text, a fixed buffer (log 20) for audio."""

    def __init__(self, init: float, learnable: bool):
        super().__init__()
        value = torch.tensor(float(init)).log()
        if learnable:
            self.log_logit_scale = nn.Parameter(value)
        else:
            self.register_buffer("log_logit_scale", value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_logit_scale.exp().clamp(max=100.0) * x


def _head(width: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(width, eps=1e-6), SelectToken(0), nn.Linear(width, out_dim, bias=False))


class ImageBindModel(nn.Module):
    """`embed("vision" | "text" | "audio", x)` -> (B, out_dim) embeddings, normalised and logit-scaled."""

    def __init__(self, config: ImageBindConfig):
        super().__init__()
        c = self.config = config
        kt, kh, kw = c.vision_kernel
        vision_patches = (c.vision_frames // kt) * (c.image_size // kh) * (c.image_size // kw)
        vision_stem = PatchStem(nn.Sequential(
            RepeatFrames(c.vision_frames),
            nn.Conv3d(3, c.vision_width, kernel_size=c.vision_kernel, stride=c.vision_kernel, bias=False),
        ))
        audio_grid = [(n - c.audio_kernel) // c.audio_stride + 1 for n in (c.audio_mel_bins, c.audio_frames)]
        audio_stem = PatchStem(
            nn.Conv2d(1, c.audio_width, kernel_size=c.audio_kernel, stride=c.audio_stride, bias=False),
            nn.LayerNorm(c.audio_width),  # default eps 1e-5 here, as in the official stem
        )
        self.modality_preprocessors = nn.ModuleDict({
            "vision": PatchTokens(vision_stem, vision_patches, c.vision_width),
            "text": TextTokens(c.vocab_size, c.context_length, c.text_width),
            "audio": PatchTokens(audio_stem, audio_grid[0] * audio_grid[1], c.audio_width),
        })
        self.modality_trunks = nn.ModuleDict({
            "vision": Trunk(c.vision_width, c.vision_layers, c.vision_heads, True, False, 0.0),
            "text": Trunk(c.text_width, c.text_layers, c.text_heads, False, False, 0.0),
            "audio": Trunk(c.audio_width, c.audio_layers, c.audio_heads, False, True, c.audio_drop_path),
        })
        self.modality_heads = nn.ModuleDict({
            "vision": _head(c.vision_width, c.out_dim),
            "text": SelectEndAndProject(c.text_width, c.out_dim),
            "audio": _head(c.audio_width, c.out_dim),
        })
        self.modality_postprocessors = nn.ModuleDict({
            "vision": Normalize(),
            "text": nn.Sequential(Normalize(), LogitScale(1 / 0.07, learnable=True)),
            "audio": nn.Sequential(Normalize(), LogitScale(20.0, learnable=False)),
        })
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random weights for tests (a real checkpoint overwrites them all); no-op on the meta device."""
        for param in self.parameters():
            if param.ndim >= 2:  # 1-d LayerNorm weights, biases and the logit scale keep their defaults
                nn.init.normal_(param, std=0.02)

    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        if modality == "audio" and x.ndim == 5:  # (B, clips, 1, mel, frames): embed each clip, average
            batch, clips = x.shape[:2]
            return self.embed("audio", x.reshape(batch * clips, *x.shape[2:])).reshape(batch, clips, -1).mean(1)
        tokens = self.modality_preprocessors[modality](x)
        if modality == "text":
            trunk_out = self.modality_trunks["text"](tokens, self.modality_preprocessors["text"].mask)
            pooled = self.modality_heads["text"](trunk_out, x.argmax(dim=-1))
        else:
            pooled = self.modality_heads[modality](self.modality_trunks[modality](tokens))
        return self.modality_postprocessors[modality](pooled)
