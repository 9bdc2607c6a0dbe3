"""Library inputs: `space.embed` takes paths, bytes and decoded items alike, and `bonds` has a public face."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

import bonds
from bonds.encoders.base import Audio
from bonds.errors import MediaError
from tests.bonds.spaces import encoder_space, parallel_combination


def _photo(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    path = tmp_path / "dog.png"
    Image.fromarray(pixels).save(path)
    return path


def _clip(tmp_path):
    t = np.arange(8000) / 16_000
    samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    path = tmp_path / "bark.wav"
    sf.write(path, samples, 16_000)
    return path


def test_an_image_embeds_the_same_from_a_path_its_bytes_and_pil_in_any_mode(tmp_path):
    space = encoder_space("base", 16, 0)
    path = _photo(tmp_path)
    image = Image.open(path)
    rows = space.embed("image", [str(path), path, path.read_bytes(), image, image.convert("RGBA")])
    assert rows.shape == (5, 16)
    np.testing.assert_allclose(rows, np.repeat(rows[:1], 5, axis=0), atol=1e-6)


def test_audio_embeds_the_same_from_a_path_bytes_and_audio_through_a_bond(tmp_path):
    *_, space = parallel_combination()  # audio reaches a bond's expert too
    path = _clip(tmp_path)
    samples, rate = sf.read(path, dtype="float32")
    rows = space.embed("audio", [path, path.read_bytes(), Audio(samples, rate)], {"preset": "versatile"})
    np.testing.assert_allclose(rows, np.repeat(rows[:1], 3, axis=0), atol=1e-6)
    components = space.components("audio", [str(path)])
    assert components.leaves.shape[0] == 1


@pytest.mark.parametrize(("modality", "items", "message"), [
    ("image", ["missing.jpg"], "is not a file"),
    ("image", [b"not an image"], "not a decodable image"),
    ("image", [3.5], "path, bytes or a decoded image, not float"),
    ("audio", [np.zeros(100)], "no sample rate"),
    ("text", [b"bytes"], "a text item is a str, not bytes"),
    ("text", "a dog", "pass a list of text items"),
])
def test_bad_items_name_what_is_wrong_and_where(modality, items, message):
    space = encoder_space("base", 16, 0)
    with pytest.raises(MediaError, match=message) as caught:
        space.embed(modality, items)
    assert caught.value.index in (0, None)


def test_the_public_face_loads_lazily():
    import subprocess
    import sys

    probe = "import sys, bonds.errors; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
    from bonds import Mixing, create_encoder, list_spaces, load_space

    assert "starter_e5" in list_spaces() and callable(load_space)
    assert create_encoder("tiny", dim=4).dim == 4 and Mixing(preset="english").preset == "english"
    with pytest.raises(AttributeError, match="public names"):
        bonds.no_such_name  # noqa: B018
    assert set(bonds.__all__) <= set(dir(bonds))


def test_a_wav_in_memory_is_bytes_too():
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(1600, dtype=np.float32), 16_000, format="WAV")
    rows = encoder_space("base", 16, 0).embed("audio", [buffer.getvalue()])
    assert rows.shape == (1, 16)


def test_every_export_is_listed():
    assert sorted(bonds.__all__) == sorted(bonds._EXPORTS)
