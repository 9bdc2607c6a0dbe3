"""Admission by cost (service.admission): estimates from headers, per-request and in-flight budgets,
refusals before anything is decoded, reasons in /metrics, everything given back when requests end."""

from __future__ import annotations

import base64

import pytest

import service.inputs
from bonds.classify import load_labelset
from harness import bad_media as media
from service.admission import (
    MB,
    Admission,
    Cost,
    TooCostly,
    audio_cost,
    image_cost,
    input_cost,
    labels_cost,
    text_cost,
)
from service.errors import Overloaded
from service.metrics import Metrics
from service.settings import Settings


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- estimates ------------------------------------------------------------------------------------------
def test_costs_grow_with_what_an_input_holds():
    assert text_cost(0) == Cost(1, 0) and text_cost(20_000) == Cost(11, 80_000)
    assert image_cost(224, 224) == Cost(1, 3 * 224 * 224) and image_cost(6300, 6300).work == 10
    assert audio_cost(16_000 * 600, 2, 16_000) == Cost(61, 4 * 16_000 * 600 * 3)
    assert labels_cost(["a cat", "a dog"]) == Cost(2, 40)


def test_input_costs_come_from_headers_before_any_decoding(monkeypatch):
    monkeypatch.setattr(service.inputs, "decode_image", lambda *a: pytest.fail("decoded"))
    settings = Settings()
    assert input_cost("image", media.huge_png(6300, 6300), settings) == image_cost(6300, 6300)
    assert input_cost("audio", media.wav(2.0, rate=8_000, channels=2), settings) == audio_cost(16_000, 2, 8_000)
    # a header declaring more than the duration limit is priced at the limit: that limit refuses it, by name
    assert input_cost("audio", media.wav(601.0, rate=8_000, subtype="PCM_U8"), settings).work == 61
    assert input_cost("image", b"not an image", settings) == Cost(1, 12)  # decoding will say what is wrong


def test_the_largest_label_sets_fit_one_request_by_default():
    """imagenet1k (4 983 descriptions) and FREEBIND_MAX_LABEL_DESCRIPTIONS of them with 256 of the longest texts."""
    settings = Settings()
    assert 4_983 <= labels_cost(load_labelset("imagenet1k").descriptions).work <= settings.max_request_work
    most = labels_cost(["x"] * settings.max_label_descriptions)
    assert most.work + 256 * text_cost(settings.max_text_chars).work <= settings.max_request_work


# --- the ledger -----------------------------------------------------------------------------------------
def test_per_request_limits_are_413_and_in_flight_limits_429_with_reasons():
    metrics = Metrics()
    admission = Admission(Settings(max_request_work=10, max_work_in_flight=15, max_request_memory_mb=1,
                                   max_memory_in_flight_mb=2, retry_after_s=4), metrics)
    first, second = admission.ticket(), admission.ticket()
    with pytest.raises(TooCostly, match="estimated at 11 units"):
        first.reserve(Cost(11, 0))
    first.reserve(Cost(6, 0))
    with pytest.raises(TooCostly, match="estimated at 12 units"):  # a request's reservations add up
        first.reserve(Cost(6, 0))
    with pytest.raises(TooCostly, match="1.5 MB decoded"):
        second.reserve(Cost(1, MB + MB // 2))
    second.reserve(Cost(9, 0))
    third = admission.ticket()
    with pytest.raises(Overloaded, match="hold 15 of 15") as refused:
        third.reserve(Cost(1, 0))
    assert refused.value.headers == {"Retry-After": "4"}
    first.release()
    third.reserve(Cost(1, MB))
    fourth = admission.ticket()
    fourth.reserve(Cost(0, MB))
    with pytest.raises(Overloaded, match="2.0 of 2 MB"):
        admission.ticket().reserve(Cost(0, 1))
    for ticket in (second, third, fourth):
        ticket.release()
    assert admission.held == Cost()
    text = metrics.render().decode()
    for reason, count in (("request_work", 2), ("request_memory", 1), ("busy_work", 1), ("busy_memory", 1)):
        assert f'freebind_admission_refused_total{{reason="{reason}"}} {count}.0' in text
    admission.close()


# --- through the app ------------------------------------------------------------------------------------
def test_a_request_over_the_memory_limit_is_refused_before_any_pixel_is_decoded(make_client, monkeypatch):
    """Issue 19, D6: 12 PNGs of 6300 x 6300 in a 0.6 MB body took the server from 1.1 to 2.5 GB of RSS."""
    client = make_client()
    monkeypatch.setattr(service.inputs, "decode_image", lambda *a: pytest.fail("an image was decoded"))
    images = [{"image": b64(media.huge_png(6300, 6300))}] * 12
    for url, body in (("/embed", {"inputs": images}), ("/collections/x/items", None)):
        if body is None:  # the same through ingestion
            assert client.post("/collections", json={"name": "x"}).status_code == 201
            body = {"items": [{"id": f"i{n}", **image} for n, image in enumerate(images)]}
        r = client.post(url, json=body)
        assert r.status_code == 413 and r.json()["type"].endswith("too_costly"), r.text
        assert "1362.6 MB decoded" in r.json()["detail"] and "FREEBIND_MAX_REQUEST_MEMORY_MB" in r.json()["detail"]
    assert 'freebind_admission_refused_total{reason="request_memory"} 2.0' in client.get("/metrics").text


def test_requests_that_do_not_fit_beside_those_in_flight_get_429_until_they_end(make_client):
    client = make_client(max_memory_in_flight_mb=2, retry_after_s=2)
    picture = {"image": b64(media.image("PNG", (512, 512)))}  # 0.75 MB decoded
    assert client.post("/embed", json={"inputs": [picture, picture]}).status_code == 200
    elsewhere = client.app.state.admission.ticket()
    elsewhere.reserve(Cost(1, MB))  # another request holds 1 MB
    r = client.post("/embed", json={"inputs": [picture, picture]})
    assert r.status_code == 429 and r.headers["retry-after"] == "2" and "retry later" in r.json()["detail"]
    elsewhere.release()
    assert client.post("/embed", json={"inputs": [picture, picture]}).status_code == 200
    assert client.get("/metrics").text.count("freebind_admitted_memory_bytes 0.0") == 1  # all given back


def test_label_descriptions_count_against_the_request_only_when_embedded(make_client):
    client = make_client(max_request_work=40)
    r = client.post("/classify", json={"inputs": ["a dog"], "labels": [f"label {i}" for i in range(50)]})
    assert r.status_code == 413 and "estimated at 51 units" in r.json()["detail"]
    labels = [f"label {i}" for i in range(30)]
    assert client.post("/classify", json={"inputs": ["a dog"], "labels": labels}).status_code == 200
    cached = client.post("/classify", json={"inputs": ["x"] * 35, "labels": labels})  # centres cached: 35 units
    assert cached.status_code == 200
