"""The InternVL-C adapter, on a tiny model with the same remote-code interface loaded from a folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bonds.encoders import create_encoder
from bonds.errors import CheckpointError
from tests.bonds.encoders.parity import assert_bf16_parity
from tests.bonds.encoders.tiny_internvl import write_tiny_internvl


@pytest.fixture(scope="module")
def internvl_folder(tmp_path_factory):
    return write_tiny_internvl(tmp_path_factory.mktemp("internvl_c"))


def test_text_and_image_embeddings_follow_the_model_card(internvl_folder, shared_data):
    encoder = create_encoder("internvl_c", path=str(internvl_folder))
    assert encoder.dim == 12 and set(encoder.modalities) == {"text", "image"}
    texts = ["a photo of a dog", "a photo of a cat"]
    ids = encoder.preprocess("text", texts)
    assert ids.shape == (2, 80)  # padded to max_length 80
    assert ids[0, 0].item() != 0 and (ids[0] == 0).sum() > 60  # pad id 0 fills the tail
    assert "summarize" in encoder.tokenizer.decode(ids[0])  # the "summarize:" prefix is applied
    vectors = encoder.encode("text", texts).vectors
    reference = torch.nn.functional.normalize(encoder.model.encode_text(ids), dim=-1).detach().numpy()
    assert np.allclose(vectors, reference, atol=1e-6)
    photo = Image.open(shared_data / "imagebind-demo" / "dog_image.jpg").convert("RGB")
    image_vectors = encoder.encode("image", [photo, photo]).vectors
    assert image_vectors.shape == (2, 12) and np.allclose(np.linalg.norm(image_vectors, axis=1), 1, atol=1e-5)
    assert np.array_equal(image_vectors[0], image_vectors[1])


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        create_encoder("internvl_c", path=str(tmp_path))


def test_bf16_matches_fp32_on_real_photos(internvl_folder, shared_data):
    photos = [
        Image.open(shared_data / "imagebind-demo" / f"{n}_image.jpg").convert("RGB") for n in ("dog", "car", "bird")]
    assert_bf16_parity(lambda dtype: create_encoder("internvl_c", path=str(internvl_folder), dtype=dtype),
                       {"text": ["a photo of a dog", "a car on a road"], "image": photos})
