"""A tiny model with InternVL-14B-224px's remote-code interface, written as a user's model folder.

Only the interface FreeBind uses is reproduced: `encode_image(pixel_values, mode="InternVL-C")`,
`encode_text(input_ids)` (pad id 0), `config.clip_embed_dim`.
"""

from __future__ import annotations

import json
from pathlib import Path

MODELING = '''
import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel


class TinyInternVLConfig(PretrainedConfig):
    model_type = "tiny_internvl"

    def __init__(self, vocab_size=64, width=16, clip_embed_dim=12, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.width, self.clip_embed_dim = vocab_size, width, clip_embed_dim


class TinyInternVL(PreTrainedModel):
    config_class = TinyInternVLConfig

    def __init__(self, config):
        super().__init__(config)
        self.tok = nn.Embedding(config.vocab_size, config.width)
        self.patch = nn.Conv2d(3, config.width, 8, 8)
        self.text_projection = nn.Linear(config.width, config.clip_embed_dim)
        self.clip_projector = nn.Linear(config.width, config.clip_embed_dim)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.5)

    def encode_image(self, image, mode="InternVL-C"):
        if mode != "InternVL-C":
            raise ValueError(mode)
        return self.clip_projector(self.patch(image).mean((2, 3)))

    def encode_text(self, text):
        mask = (text != 0).to(self.tok.weight.dtype)[..., None]
        return self.text_projection((self.tok(text) * mask).sum(1) / mask.sum(1).clamp(min=1))
'''

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "summarize", ":", "a", "photo", "of", "dog", "cat", "car", "the"]


def write_tiny_internvl(folder: Path, seed: int = 0) -> Path:
    import importlib.util

    import torch
    from transformers import BertTokenizer, CLIPImageProcessor

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "modeling_tiny_internvl.py").write_text(MODELING)
    spec = importlib.util.spec_from_file_location("modeling_tiny_internvl", folder / "modeling_tiny_internvl.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(seed)
    model = module.TinyInternVL(module.TinyInternVLConfig())
    model.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "modeling_tiny_internvl.TinyInternVLConfig",
                          "AutoModel": "modeling_tiny_internvl.TinyInternVL"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder
