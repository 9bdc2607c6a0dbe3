"""POST /v1/embeddings through the official `openai` client, pointed at the in-process app.

FastAPI's TestClient is an `httpx.Client`, so it is the OpenAI client's transport: no socket, lifespan on.
"""

from __future__ import annotations

import base64

import numpy as np
import openai
import pytest

from harness.tiny_space import DIM, SPACE
from tests.service.conftest import png_bytes

PNG_URI = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()


def oai(client, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{client.base_url}/v1", api_key=key, http_client=client, max_retries=0)


def embed(client, inputs, **body) -> np.ndarray:
    out = client.post("/embed", json={"inputs": inputs, **body}).json()
    return np.array([row["embedding"] for row in out["data"]], dtype=np.float32)


def test_plain_string_and_list(client):
    api = oai(client)
    one = api.embeddings.create(model=SPACE, input="a dog barks")
    assert one.model == SPACE and len(one.data) == 1 and len(one.data[0].embedding) == DIM
    np.testing.assert_allclose(one.data[0].embedding, embed(client, ["a dog barks"])[0], atol=1e-6)
    many = api.embeddings.create(model=SPACE, input=["one", "two", "three"])
    assert [d.index for d in many.data] == [0, 1, 2]
    np.testing.assert_allclose([d.embedding for d in many.data], embed(client, ["one", "two", "three"]), atol=1e-6)


def test_float_and_base64_formats_agree(client):
    api = oai(client)
    floats = api.embeddings.create(model=SPACE, input=["a", "b"], encoding_format="float")
    packed = api.embeddings.create(model=SPACE, input=["a", "b"], encoding_format="base64")  # left as strings
    default = api.embeddings.create(model=SPACE, input=["a", "b"])  # the client asks for base64 and decodes it
    for f, b, d in zip(floats.data, packed.data, default.data, strict=True):
        decoded = np.frombuffer(base64.b64decode(b.embedding), dtype="<f4")
        np.testing.assert_array_equal(decoded, np.asarray(f.embedding, dtype=np.float32))
        np.testing.assert_array_equal(np.asarray(d.embedding, dtype=np.float32), decoded)


def test_media_as_data_uris_and_extra_fields(client):
    api = oai(client)
    image = api.embeddings.create(model=SPACE, input=[PNG_URI, "a red picture"])
    np.testing.assert_allclose(image.data[0].embedding, embed(client, [{"image": PNG_URI}])[0], atol=1e-6)
    raw_b64 = PNG_URI.split(",", 1)[1]
    same = api.embeddings.create(model=SPACE, input=raw_b64, extra_body={"modality": "image"})
    np.testing.assert_allclose(same.data[0].embedding, image.data[0].embedding, atol=1e-6)
    mixed = api.embeddings.create(model=SPACE, input="a dog", extra_body={"mixing": {"preset": "strong"}})
    np.testing.assert_allclose(mixed.data[0].embedding, embed(client, ["a dog"], mixing={"preset": "strong"})[0],
                               atol=1e-6)


def test_default_model_and_dimensions(client):
    raw = client.post("/v1/embeddings", json={"input": "x"}).json()
    assert raw["object"] == "list" and raw["model"] == SPACE and raw["data"][0]["object"] == "embedding"
    assert raw["usage"] == {"prompt_tokens": 1, "total_tokens": 1}  # the tiny encoder's tokens are words
    assert client.post("/v1/embeddings", json={"input": "x", "dimensions": DIM}).status_code == 200
    assert client.post("/v1/embeddings", json={"input": "x", "dimensions": 3}).status_code == 422


def test_errors_reach_the_client_typed(client):
    api = oai(client)
    with pytest.raises(openai.NotFoundError, match="served spaces"):
        api.embeddings.create(model="gpt-nope", input="x")
    with pytest.raises(openai.UnprocessableEntityError, match="token-id"):
        api.embeddings.create(model=SPACE, input=[[1, 2, 3]])
    with pytest.raises(openai.UnprocessableEntityError) as raised:
        api.embeddings.create(model=SPACE, input="x", extra_body={"mixing": {"preset": "nope"}})
    error = raised.value.body  # OpenAI's error object: code is a string or null, never a number
    assert isinstance(error["message"], str) and isinstance(error["code"], str) and "param" in error


def test_api_key(make_client):
    client = make_client(api_keys=["s3cret"])
    with pytest.raises(openai.AuthenticationError):
        oai(client, "wrong").embeddings.create(model=SPACE, input="x")
    assert len(oai(client, "s3cret").embeddings.create(model=SPACE, input="x").data) == 1


def test_models_list_the_served_spaces_and_usage_counts_text_tokens(client):
    api = oai(client)
    assert [m.id for m in api.models.list()] == [SPACE]
    counted = api.embeddings.create(model=SPACE, input=["a dog barks", "two words", PNG_URI])
    assert counted.usage.prompt_tokens == counted.usage.total_tokens == 5  # 3 + 2; the image has no tokens
    only_media = api.embeddings.create(model=SPACE, input=[PNG_URI])
    assert only_media.usage.prompt_tokens == 0


def test_token_ids_name_the_langchain_setting(client):
    with pytest.raises(openai.UnprocessableEntityError, match="check_embedding_ctx_length=False"):
        oai(client).embeddings.create(model=SPACE, input=[[1, 2, 3]])
