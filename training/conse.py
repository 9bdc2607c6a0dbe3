"""ConSE pseudo-pairs: a classifier's posteriors are exact retrieval weights over a bank of class names.

The starter space embeds a photo as ConSE: `n(sum_k w_k M[c_k])`, `w` the classifier's top-k class
probabilities renormalised, `M` the class names embedded as text. The same weights over the class names
embedded in another space give that photo's ConSE *there* (in e5: the reference the 1,000-class
evaluation compares against), so every posterior is a pseudo-pair `(n(w . M_source), n(w . M_target))`
between any two spaces that embed the class names, with no softmax retrieval in between. Photos are
image-side data for free: each shared photo and random perturbations of it (crops, flips, lighting) are
classified once and stored as top-k weights.

    freebind train posteriors --pool "cifar=image:.../manifest.jsonl?step=3" --views 4
    freebind train pairs ... --conse cifar --classes imagenet_names

Posteriors live beside the (possibly shared, symlinked) embeddings folder, `posteriors/<pool>.safetensors`
(`indices`, `weights`: (items x views, k)) + `.json` (the pool string, views, top-k, seed, row ids).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from bonds.vectors import l2_normalize
from training.pools import PoolSpec, list_pool

log = logging.getLogger(__name__)

TOPK = 10  # the starter encoder's default (bonds/spaces/starter*.yaml: topk 10)


@dataclass(frozen=True)
class ViewConfig:
    """How many views of each photo are classified: view 0 as the encoder sees it, the rest perturbed."""

    views: int = 1
    topk: int = TOPK
    seed: int = 0
    min_scale: float = 0.35  # smallest crop area, as a share of the photo

    def validate(self) -> None:
        if self.views < 1 or not 1 <= self.topk <= 1000:
            raise ValueError(f"views must be >= 1 and topk in 1..1000, got views={self.views}, topk={self.topk}")
        if not 0 < self.min_scale <= 1:
            raise ValueError(f"min scale must be in (0, 1], got {self.min_scale}")


def top_weights(probs_nc: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices (n, k) int32, weights (n, k) float32): each row's top-k classes, weights summing to 1."""
    idx_nk = np.argsort(-probs_nc, axis=1, kind="stable")[:, :k]
    top_nk = np.take_along_axis(probs_nc, idx_nk, axis=1).astype(np.float64)
    return idx_nk.astype(np.int32), (top_nk / top_nk.sum(axis=1, keepdims=True)).astype(np.float32)


def top_of(idx_nk: np.ndarray, w_nk: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Stored top weights (best first) cut to the top `k`, renormalised: what a ConSE encoder with `topk=k`
    mixes, since renormalising the top k of the top n keeps their ratios."""
    if not 1 <= k <= idx_nk.shape[1]:
        raise ValueError(f"the posteriors hold each photo's top {idx_nk.shape[1]} classes, so topk {k} cannot be "
                         f"scored from them; classify the pool again with topk >= {k} (its posteriors' topk)")
    w_nk = w_nk[:, :k].astype(np.float64)
    return idx_nk[:, :k], (w_nk / w_nk.sum(axis=1, keepdims=True)).astype(np.float32)


def conse(idx_nk: np.ndarray, w_nk: np.ndarray, bank_cd: np.ndarray) -> np.ndarray:
    """`n(sum_k w_k bank[idx_k])` per row, float32 unit rows."""
    return l2_normalize(np.einsum("nk,nkd->nd", w_nk.astype(np.float64), bank_cd[idx_nk].astype(np.float64)))


def one_hot(n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights of a photo the classifier is sure of, one per class: class c's own row of the bank."""
    return np.arange(n_classes, dtype=np.int32)[:, None], np.ones((n_classes, 1), np.float32)


def perturb(image, rng: np.random.Generator, min_scale: float = 0.35):
    """A random view of a PIL image: a crop of `min_scale`..1 of its area (aspect 3/4..4/3), mirrored half
    the time, brightness and contrast within +-25%."""
    from PIL import ImageEnhance, ImageOps

    image = image.convert("RGB")
    width, height = image.size
    area = width * height * rng.uniform(min_scale, 1.0)
    ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    cw, ch = min(width, max(1, round(math.sqrt(area * ratio)))), min(height, max(1, round(math.sqrt(area / ratio))))
    left, top = int(rng.integers(0, width - cw + 1)), int(rng.integers(0, height - ch + 1))
    view = image.crop((left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        view = ImageOps.mirror(view)
    view = ImageEnhance.Brightness(view).enhance(rng.uniform(0.75, 1.25))
    return ImageEnhance.Contrast(view).enhance(rng.uniform(0.75, 1.25))


def views_of(image, item: int, config: ViewConfig) -> list:
    """The photo itself, then `views - 1` perturbations seeded by (seed, item, view): the same on every run."""
    out = [image]
    for view in range(1, config.views):
        out.append(perturb(image, np.random.default_rng([config.seed, item, view]), config.min_scale))
    return out


def posteriors_folder(workdir: Path) -> Path:
    """Beside the embeddings folder (followed when it is a link), so bonds sharing embeddings share these."""
    return (Path(workdir) / "embeddings").resolve().parent / "posteriors"


def classify_pool(workdir: Path, spec: PoolSpec, config: ViewConfig, *, batch_size: int = 4, device: str = "cpu",
                  progress: bool = True) -> dict:
    """Classify every view of every photo of an image pool once and store the top-k weights; a pool
    already stored with the same pool string and views is kept. Returns its sidecar."""
    config.validate()
    if spec.modality != "image":
        raise ValueError(f"pool {spec.name!r} is {spec.modality}: posteriors are for image pools")
    folder = posteriors_folder(workdir)
    sidecar_path = folder / f"{spec.name}.json"
    wanted = {"pool": spec.to_string(), "views": asdict(config)}
    if sidecar_path.is_file():
        cached = json.loads(sidecar_path.read_text())
        if {k: cached[k] for k in wanted} == wanted:
            return cached
        raise ValueError(f"{sidecar_path} holds posteriors of {cached['pool']!r} with {cached['views']}; remove it "
                         "or name the pool differently")
    from safetensors.numpy import save_file

    from bonds.encoders.efficientnet import EfficientNetLite0Encoder

    pool = list_pool(spec)
    classifier = EfficientNetLite0Encoder(device=device, output="logits")
    idx_parts, w_parts, ids = [], [], []
    for at in tqdm(range(0, len(pool), batch_size), disable=not progress, desc=f"classify {spec.name}", unit="batch"):
        stop = min(at + batch_size, len(pool))
        images = []
        for i, image in zip(range(at, stop), pool.load(range(at, stop)), strict=True):
            images += views_of(image, i, config)
            ids += [f"{pool.ids[i]}#{v}" for v in range(config.views)]
        for chunk in range(0, len(images), batch_size):  # small batches keep the activations in cache
            idx, w = top_weights(classifier.classify(images[chunk : chunk + batch_size]), config.topk)
            idx_parts.append(idx)
            w_parts.append(w)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"indices": np.concatenate(idx_parts), "weights": np.concatenate(w_parts)},
              str(folder / f"{spec.name}.safetensors"))
    sidecar = {**wanted, "ids": ids, "rows": len(ids)}
    sidecar_path.write_text(json.dumps(sidecar) + "\n")  # written last: it marks a finished pool
    log.info("classified %d photos x %d views of pool %s", len(pool), config.views, spec.name)
    return sidecar


def load_posteriors(workdir: Path, name: str) -> tuple[dict, np.ndarray, np.ndarray]:
    """(sidecar, indices (n, k), weights (n, k)) of a classified pool."""
    from safetensors.numpy import load_file

    folder = posteriors_folder(workdir)
    if not (folder / f"{name}.json").is_file():
        raise FileNotFoundError(f"no posteriors of pool {name!r} in {folder}; run `posteriors` with that pool first")
    tensors = load_file(str(folder / f"{name}.safetensors"))
    return json.loads((folder / f"{name}.json").read_text()), tensors["indices"], tensors["weights"]


def conse_vectors(workdir: Path, space: str, spec: PoolSpec, *, topk: int = TOPK, device: str = "cpu",
                  progress: bool = False) -> np.ndarray:
    """An image pool's photos as an encoder with ConSE images embeds them in `space` (the e5 encoder's
    `conse_images`), from the work folder alone: the starter classifier's posteriors (classified once, then
    cached) cut to the encoder's `topk`, over `space`'s embeddings of the 1,000 class names, a pool the space
    embeds here if it has not."""
    from bonds.encoders.conse import imagenet_classnames
    from training.embed import SpaceSpec, embed_pools, load_embeddings, read_space_info
    from training.evaluate import write_prompt_pool

    sidecar = posteriors_folder(workdir) / f"{spec.name}.json"
    stored = json.loads(sidecar.read_text())["views"]["topk"] if sidecar.is_file() else max(topk, TOPK)
    classify_pool(workdir, spec, ViewConfig(topk=stored), device=device, progress=progress)  # checks the pool
    names = write_prompt_pool(workdir, imagenet_classnames())
    embed_pools(workdir, SpaceSpec(**read_space_info(workdir, space)["spec"]), [names], progress=progress)
    _, idx, w = load_posteriors(workdir, spec.name)
    return conse(*top_of(idx, w, topk), load_embeddings(workdir, space, names.name)[1])


def conse_pairs(workdir: Path, name: str, classes_s: np.ndarray,
                classes_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pseudo-pairs of a classified pool: its ConSE over the class names in the source and the target."""
    _, idx, w = load_posteriors(workdir, name)
    if len(classes_s) <= int(idx.max()):
        raise ValueError(f"posteriors of {name!r} name class {int(idx.max())} but the class-name pool has "
                         f"{len(classes_s)} rows; give the classifier's class names, line i = class i")
    return conse(idx, w, classes_s), conse(idx, w, classes_t)
