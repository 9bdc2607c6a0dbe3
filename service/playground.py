"""The playground page at / (service/static), and the demo collection it offers on a first visit.

The demo is built by the page through the public API (so keys, limits and errors are the API's own):
it fetches `/playground/demo.json`, then each photo from `/playground/media/<file>`, and adds them with
the texts listed there to a collection named `demo`. The photos are sample images that ship inside
packages the service installs anyway (matplotlib, scikit-learn), read from where those packages lie:
this repository holds no media of its own. Whichever of them is missing is left out of the demo.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from service.errors import ServiceError

STATIC = Path(__file__).parent / "static"
DEMO_COLLECTION = "demo"
# file -> (package, path inside it, caption shown with it, credit)
DEMO_PHOTOS = {
    "grace_hopper.jpg": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg",
                         "Grace Hopper in her navy uniform", "US Navy, public domain (matplotlib's sample data)"),
    "china.jpg": ("sklearn", "datasets/images/china.jpg", "a pagoda above a lake",
                  "danielbuechele, CC BY 2.0 (scikit-learn's sample images)"),
    "flower.jpg": ("sklearn", "datasets/images/flower.jpg", "an orange dahlia",
                   "vultilion, CC BY 2.0 (scikit-learn's sample images)"),
}
# English texts on the photos' subjects and others: a query in another language finds them through the bond
DEMO_TEXTS = [
    "a woman in a military uniform", "a naval officer with medals", "a temple with red and green roofs",
    "an old palace by the water", "a flower in bloom", "orange petals in a garden", "a dog barking in the yard",
    "a cat asleep on the sofa", "a car on the motorway", "a bird singing in a tree", "a sailing boat on the sea",
    "people eating in a restaurant",
]


class DemoMediaNotFound(ServiceError):
    kind = "unknown_name"


def demo_photo_path(name: str) -> Path | None:
    """Where the installed package keeps the photo `name`, without importing the package; None if absent."""
    entry = DEMO_PHOTOS.get(name)
    if entry is None:
        return None
    spec = importlib.util.find_spec(entry[0])
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / entry[1]
        if path.is_file():
            return path
    return None


def demo_manifest() -> dict[str, Any]:
    photos = [{"id": name, "url": f"playground/media/{name}", "caption": caption, "credit": credit}
              for name, (_, _, caption, credit) in DEMO_PHOTOS.items() if demo_photo_path(name) is not None]
    return {"collection": DEMO_COLLECTION, "photos": photos, "texts": DEMO_TEXTS,
            "tone": {"id": "tone-440hz.wav", "caption": "a steady 440 Hz tone: audio without speech"}}


def install_playground(app: FastAPI) -> None:
    """The page, its files and the demo's manifest and photos: public (the page asks for a key itself)."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def playground() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/playground/demo.json", include_in_schema=False)
    async def demo() -> dict[str, Any]:
        return demo_manifest()

    @app.get("/playground/media/{name}", include_in_schema=False)
    async def demo_media(name: str) -> FileResponse:
        path = demo_photo_path(name)
        if path is None:
            raise DemoMediaNotFound(f"no demo photo {name!r}; the demo has {', '.join(DEMO_PHOTOS)}")
        return FileResponse(path, media_type="image/jpeg")
