"""The playground page in headless Chromium against a real `freebind serve`: make a collection from
real photos and texts, query, move a slider, and see the ranking the API gives for that mixing."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
import torch
import yaml

from bonds.checkpoint import save_bond_checkpoint
from bonds.projector import ProjectorConfig, ProjectorMixture
from harness.processes import REPO, running_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = REPO / "artifacts"
TEXTS = ["a dog barks in the yard", "a cow in a green field", "a horse runs", "a small grey cat", "ducks on a pond"]


@pytest.fixture(scope="module")
def space_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("space")
    torch.manual_seed(3)
    save_bond_checkpoint(root / "aux", ProjectorMixture(ProjectorConfig(8, 16, hidden=32)).eval(), kind="combination",
                         source={"id": "aux", "dim": 8}, target={"id": "base", "dim": 16}, modalities=["text"])
    path = root / "playground_space.yaml"
    path.write_text(yaml.safe_dump({
        "format_version": 1, "name": "playground_space", "base": "base",
        "encoders": {"base": {"kind": "tiny", "options": {"dim": 16, "seed": 0}},
                     "aux": {"kind": "tiny", "options": {"dim": 8, "seed": 5, "modalities": ["text"]}}},
        "bonds": [
            {"name": "aux", "kind": "combination", "experts": {"aux": {"checkpoint": "aux"}},
             "factors": {"text": 0.2}}],
        "presets": {"aux_heavy": {"aux": {"text": 0.9}}},
    }))
    return path


def api_ranking(base: str, query: str, factor: float) -> list[str]:
    body = {"collection": "farm", "query": {"text": query}, "top_k": 8,
            "mixing": {"factors": {"aux": {"text": factor}}}}
    response = httpx.post(f"{base}/search", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return [r["id"] for r in response.json()["results"]]


def page_ranking(page) -> list[str]:
    return page.eval_on_selector_all("#results li", "items => items.map(li => li.dataset.id)")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/install.sh installs it)")
def test_query_slider_and_ranking_match_the_api(space_file, tmp_path, shared_data):
    playwright = pytest.importorskip("playwright.sync_api")
    photos = [shared_data / "gcompris-farm" / f"{name}.webp" for name in ("dog", "cow", "horse")]
    with running_server([str(space_file)], tmp_path / "data") as (base, _), playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(base + "/")
        page.wait_for_function("document.querySelectorAll('#space option').length > 0")
        assert page.locator("label[for=query-text]").inner_text().startswith("Text")  # inputs carry labels
        # uploads go in requests of at most 16 items and ~8 MB of JSON (the body limit is 32 MiB): two 5 MB photos
        # travel apart, small texts together
        sizes = page.evaluate("[...batches([{image: 'x'.repeat(5e6)}, {image: 'x'.repeat(5e6)},"
                              " ...Array(20).fill({text: 'a'})], 16, 8e6)].map(b => b.length)")
        assert sizes == [1, 16, 5]

        # make a collection from real photos and typed texts, through the page
        page.wait_for_selector("#new-name", state="visible")  # an empty server: the form is open already
        page.fill("#new-name", "farm")
        page.set_input_files("#new-files", [str(p) for p in photos])
        page.fill("#new-texts", "\n".join(TEXTS))
        page.click("#create")
        page.wait_for_function("[...document.querySelectorAll('#collection option')].some(o => o.value === 'farm')")
        assert httpx.get(f"{base}/collections/farm", timeout=10).json()["count"] == len(TEXTS) + len(photos)

        # a query at the default factor: the page shows the API's ranking
        query = "a dog in a field"
        page.fill("#query-text", query)
        page.click("#search")
        page.wait_for_selector("#results li[data-id]")
        assert page_ranking(page) == api_ranking(base, query, 0.2)

        # move the slider to 1 with the keyboard: the page re-ranks as the API does under that factor
        low, high = api_ranking(base, query, 0.2), api_ranking(base, query, 1.0)
        assert low != high, "fixture must make the factor matter"
        page.focus("#f-aux-text")
        page.keyboard.press("End")
        page.wait_for_function("ids => [...document.querySelectorAll('#results li')]"
                               ".map(li => li.dataset.id).join() === ids", arg=",".join(high))
        assert '"text": 1' in page.inner_text("#mixing-json")
        assert "curl -s" in page.inner_text("#curl") and '"aux":{"text":1}' in page.inner_text("#curl")

        # an API error reads as a message, not a blank page
        page.click("#create")  # "farm" exists already
        page.wait_for_selector("#error:not([hidden])")
        assert "farm" in page.inner_text("#error")

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "playground.png"), full_page=True)
        browser.close()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/install.sh installs it)")
def test_keyed_server_and_hostile_metadata(space_file, tmp_path):
    """With FREEBIND_API_KEYS the page asks for a key and then works; metadata any client stored cannot run
    script in it (an attribute break-out in `thumbnail` stays text, a javascript: URL is not used)."""
    playwright = pytest.importorskip("playwright.sync_api")
    key = "k-playground"
    plain = tmp_path / "plain_space.yaml"  # a second space without bonds: the collection below lives there
    plain.write_text(yaml.safe_dump({"format_version": 1, "name": "plain_space", "base": "base",
                                     "encoders": {"base": {"kind": "tiny", "options": {"dim": 16, "seed": 0}}}}))
    with running_server([str(space_file), str(plain)], tmp_path / "data", api_keys='["k-playground"]') as (base, _), \
            playwright.sync_playwright() as p:
        auth = {"authorization": f"Bearer {key}"}
        created = httpx.post(f"{base}/collections", json={"name": "hostile", "space": "plain_space"}, headers=auth,
                             timeout=10)
        assert created.status_code == 201, created.text
        items = [{"id": "x1", "text": "a dog", "metadata": {"thumbnail": 'x" onerror="window.pwned=1'}},
                 {"id": "x2", "text": "a dog barks", "metadata": {"audio": "javascript:window.pwned=2"}}]
        assert httpx.post(f"{base}/collections/hostile/items", json={"items": items}, headers=auth,
                          timeout=30).status_code == 200
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(base + "/")
        page.wait_for_selector("#auth:not([hidden])")  # the first call was a 401
        page.fill("#api-key", key)
        page.click("#save-key")
        page.wait_for_function("[...document.querySelectorAll('#collection option')].some(o => o.value === 'hostile')")
        page.select_option("#collection", "hostile")
        assert page.input_value("#space") == "plain_space"  # the sliders follow the collection's space
        page.fill("#query-text", "a dog")
        page.click("#search")
        page.wait_for_selector("#results li[data-id]")
        assert sorted(page_ranking(page)) == ["x1", "x2"]
        assert page.locator("#results [onerror]").count() == 0 and page.locator("#results audio").count() == 0
        assert page.evaluate("window.pwned === undefined")
        assert "Bearer $FREEBIND_API_KEY" in page.inner_text("#curl")
        browser.close()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/install.sh installs it)")
def test_first_run_demo_notes_custom_presets_and_favicon(space_file, tmp_path):
    """An empty server: the page offers the demo and loads it in one click (shipped photos, texts, a tone),
    searches it at once; notes show in words; the preset menu follows the sliders; the page has an icon."""
    playwright = pytest.importorskip("playwright.sync_api")
    with running_server([str(space_file)], tmp_path / "data") as (base, _), playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(base + "/")
        page.wait_for_selector("#first-run:not([hidden])")  # nothing to search yet: the page says what to do
        assert page.evaluate("document.getElementById('new-collection').open")
        icon = page.get_attribute("link[rel=icon]", "href")
        assert httpx.get(f"{base}/{icon}", timeout=10).headers["content-type"].startswith("image/svg")

        page.click("#load-demo")
        page.wait_for_selector("#results li[data-id]", timeout=60_000)
        demo = httpx.get(f"{base}/playground/demo.json", timeout=10).json()
        assert len(demo["photos"]) == 3  # matplotlib's and scikit-learn's sample photos are installed here
        count = httpx.get(f"{base}/collections/demo", timeout=10).json()["count"]
        assert count == len(demo["texts"]) + len(demo["photos"]) + 1  # + the tone
        assert page.input_value("#collection") == "demo" and page.is_hidden("#first-run")
        photo = httpx.get(f"{base}/collections/demo/items/flower.jpg", timeout=10).json()["metadata"]
        assert photo["thumbnail"].startswith("data:image/jpeg") and "CC BY" in photo["credit"]  # shown with results
        tone = httpx.get(f"{base}/collections/demo/items/{demo['tone']['id']}", timeout=10).json()["metadata"]
        assert tone["audio"].startswith("data:audio/wav")  # kept for playback, within the metadata limit

        # a stored item's note, and the query's, read as words
        item = {"id": "silence", "text": "a quiet room",
                "metadata": {"text": "a quiet room", "note": "no speech detected"}}
        assert httpx.post(f"{base}/collections/demo/items", json={"items": [item]}, timeout=30).status_code == 200

        def with_query_note(route):
            answer = route.fetch()
            route.fulfill(response=answer, json={**answer.json(), "query_note": "no speech detected"})

        page.route("**/search", with_query_note)
        page.fill("#query-text", "a quiet room")
        page.click("#search")
        page.wait_for_selector("#query-note:not([hidden])")
        assert "no speech" in page.inner_text("#query-note")
        assert "no speech" in page.inner_text("#results li[data-id=silence] .note")

        # the preset menu names what the sliders hold
        assert page.input_value("#preset") == ""  # the bond's defaults
        page.focus("#f-aux-text")
        page.keyboard.press("End")  # 1.0: no preset has it
        page.wait_for_function("document.getElementById('preset').value === 'custom'")
        assert '"preset"' not in page.inner_text("#mixing-json")
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("ArrowLeft")  # 0.9: the aux_heavy preset's factor
        page.wait_for_function("document.getElementById('preset').value === 'aux_heavy'")
        assert '"preset": "aux_heavy"' in page.inner_text("#mixing-json")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "playground-demo.png"), full_page=True)
        browser.close()
