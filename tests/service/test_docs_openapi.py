"""/docs and /redoc work offline (their assets come from the installed package), and the OpenAPI document
says what each operation answers: its 200 model, the error statuses it can give, the bearer scheme."""

from __future__ import annotations

import re

import pytest
from pydantic import BaseModel, TypeAdapter

from service import schemas
from service.openapi import OPERATIONS, PUBLIC
from tests.service.conftest import png_bytes


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_doc_pages_load_every_asset_from_this_server(client, page):
    html = client.get(page)
    assert html.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', html.text) + re.findall(r"url: ?'([^']+)'", html.text)
    assert sources and not [s for s in sources if s.startswith(("http:", "https:", "//"))], sources
    for source in sources:
        asset = client.get(source)
        assert asset.status_code == 200 and len(asset.content) > 100, source
    assert client.get("/favicon.ico").headers["content-type"].startswith("image/svg+xml")


def test_every_operation_is_documented_with_its_answer_errors_and_security(make_client):
    document = make_client(api_keys=["k"]).get("/openapi.json").json()
    operations = {(m, p) for p, methods in document["paths"].items() for m in methods}
    assert operations == set(OPERATIONS), operations ^ set(OPERATIONS)
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "one of the server's FREEBIND_API_KEYS"}
    embed = document["paths"]["/embed"]["post"]
    assert embed["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/EmbedResponse"}
    assert {"400", "401", "404", "413", "415", "422", "429", "503"} <= set(embed["responses"])
    assert embed["security"] == [{"bearer": []}]
    listing = document["paths"]["/collections"]["get"]["responses"]
    assert set(listing) == {"200", "401", "500"}  # no body, no media: no 413/415/422
    ready = document["paths"]["/health/ready"]["get"]
    assert "security" not in ready and "401" not in ready["responses"]
    for path in PUBLIC:
        assert path in document["paths"]


def test_a_server_without_keys_documents_no_security(client):
    document = client.get("/openapi.json").json()
    assert "securitySchemes" not in document["components"]
    assert "401" not in document["paths"]["/embed"]["post"]["responses"]


def _check(model: type[BaseModel], body: dict) -> None:
    TypeAdapter(model).validate_python(body)  # extra keys would be ignored: compare keys too
    assert set(body) <= set(model.model_fields), set(body) - set(model.model_fields)


def test_real_answers_match_the_documented_models(client):
    """The models are documentation only (answers are dicts): they must describe what the routes send."""
    png = "data:image/png;base64," + __import__("base64").b64encode(png_bytes()).decode()
    _check(schemas.EmbedResponse, client.post("/embed", json={"inputs": ["a dog", {"image": png}]}).json())
    _check(schemas.OpenAIEmbeddingsResponse, client.post("/v1/embeddings", json={"input": "a dog"}).json())
    _check(schemas.OpenAIModelList, client.get("/v1/models").json())
    spaces = client.get("/spaces").json()
    _check(schemas.SpaceList, spaces)
    _check(schemas.SpaceInfo, spaces["spaces"][0])
    _check(schemas.CollectionInfo, client.post("/collections", json={"name": "c"}).json())
    _check(schemas.Upserted, client.post("/collections/c/items", json={"items": [{"id": "a", "text": "a dog"}]}).json())
    _check(schemas.CollectionList, client.get("/collections").json())
    _check(schemas.StoredItem, client.get("/collections/c/items/a").json())
    _check(schemas.SearchResponse, client.post("/search", json={"collection": "c", "query": {"text": "dog"}}).json())
    _check(schemas.ClassifyResponse,
           client.post("/classify", json={"inputs": ["dog"], "labels": ["dog", "cat"]}).json())
    _check(schemas.LabelSetList, client.get("/labelsets").json())
    _check(schemas.Health, client.get("/health/ready").json())
    _check(schemas.Deleted, client.delete("/collections/c/items/a").json())
    _check(schemas.Deleted, client.delete("/collections/c").json())
    _check(schemas.Problem, client.post("/v1/embeddings", json={"input": [[1]]}).json())


def test_a_server_without_collections_refuses_them_with_a_501_that_says_where_to_go(make_client, tmp_path):
    client = make_client(collections=False, data_dir=tmp_path / "none")
    for method, path, body in [("GET", "/collections", None), ("POST", "/collections", {"name": "c"}),
                               ("POST", "/search", {"collection": "c", "query": {"text": "x"}}),
                               ("POST", "/embed", {"inputs": ["x"], "enhance": {"collection": "c"}})]:
        answer = client.request(method, path, json=body)
        assert answer.status_code == 501, (path, answer.text)
        assert "FREEBIND_COLLECTIONS=false" in answer.json()["detail"] and "freebind serve" in answer.json()["detail"]
    assert client.post("/embed", json={"inputs": ["x"]}).status_code == 200  # embeddings are served as ever
    assert not (tmp_path / "none").exists()  # no store was opened
    document = client.get("/openapi.json").json()
    assert "501" in document["paths"]["/search"]["post"]["responses"]
    assert "501" not in document["paths"]["/classify"]["post"]["responses"]
