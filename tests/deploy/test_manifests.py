"""Deployment files: Kubernetes overlays rendered and validated against the Kubernetes schemas,
and the Dockerfile checked for what it promises (same install script, non-root, health check)."""

from __future__ import annotations

import copy
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"


def _merge(base, patch):
    """Strategic-merge subset: maps merge deeply; lists of named maps merge by name; others replace."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = _merge(base[key], value) if key in base else value
        return out
    named = isinstance(base, list) and isinstance(patch, list) and all(isinstance(i, dict) and "name" in i
                                                                       for i in base + patch)
    if named:
        by_name = {item["name"]: item for item in base}
        for item in patch:
            by_name[item["name"]] = _merge(by_name[item["name"]], item) if item["name"] in by_name else item
        return list(by_name.values())
    return patch


def render(folder: Path) -> list[dict]:
    """A small kustomize: resources, images (newTag), patches, labels."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    docs: list[dict] = []
    for resource in kustomization.get("resources", []):
        target = folder / resource
        docs += render(target) if target.is_dir() else list(yaml.safe_load_all(target.read_text()))
    for patch_ref in kustomization.get("patches", []):
        patch = yaml.safe_load((folder / patch_ref["path"]).read_text())
        docs = [_merge(d, patch) if (d["kind"], d["metadata"]["name"]) == (patch["kind"], patch["metadata"]["name"])
                else d for d in docs]
    for image in kustomization.get("images", []):
        for doc in docs:
            for c in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                if c["image"].split(":")[0] == image["name"]:
                    c["image"] = f"{image['name']}:{image['newTag']}"
    for label in kustomization.get("labels", []):
        for doc in docs:
            doc["metadata"].setdefault("labels", {}).update(label["pairs"])
    return [copy.deepcopy(d) for d in docs]


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_overlays_render_to_valid_kubernetes_objects(overlay):
    docs = render(K8S / "overlays" / overlay)
    assert {d["kind"] for d in docs} == {"Deployment", "Service", "PersistentVolumeClaim", "HorizontalPodAutoscaler"}
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30", strict=True)  # raises ValidationError on any schema violation
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    gpus = container["resources"]["limits"].get("nvidia.com/gpu")
    assert (gpus == 1) if overlay == "gpu" else gpus is None
    assert container["image"] == f"freebind:{'cuda' if overlay == 'gpu' else 'cpu'}"
    # Kubernetes injects <SERVICE>_PORT=tcp://... for every Service unless links are off: with a Service named
    # freebind that is FREEBIND_PORT, which the settings would read (and refuse) as the port
    services = {d["metadata"]["name"].upper().replace("-", "_") for d in docs if d["kind"] == "Service"}
    if any(name == "FREEBIND" or name.startswith("FREEBIND_") for name in services):
        assert deployment["spec"]["template"]["spec"].get("enableServiceLinks") is False


def test_validator_catches_a_broken_manifest():
    bad = yaml.safe_load((K8S / "base" / "deployment.yaml").read_text())
    bad["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, "1.30", strict=True)


def test_dockerfile_uses_the_make_install_script_and_runs_as_non_root():
    lines = [line.strip() for line in (REPO / "Dockerfile").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert any(line.startswith("RUN") and "bash scripts/install.sh" in line for line in lines)
    assert "install.sh" in (REPO / "Makefile").read_text()
    # the CPU image takes torch from PyTorch's CPU index (PyPI's Linux torch is the CUDA build)
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in lines
    assert [line for line in lines if line.startswith("USER")][-1] != "USER root"
    assert any("HEALTHCHECK" in line for line in lines) and any("/health/ready" in line for line in lines)
    for line in lines:
        if line.startswith("COPY ") and "--from" not in line:
            for src in line.split()[1:-1]:
                assert (REPO / src).exists(), f"Dockerfile copies {src}, which is not in the repo"


def test_the_wheel_carries_the_shipped_spaces_and_the_ray_app(tmp_path):
    """A non-editable install (a wheel on a Ray cluster) must find `starter_e5` and its bonds, and Ray's
    import path `deploy.ray.serve_app`."""
    import subprocess
    import sys
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                   check=True, capture_output=True, timeout=300)
    names = set(zipfile.ZipFile(next(tmp_path.glob("freebind-*.whl"))).namelist())
    shipped = {p.relative_to(REPO).as_posix() for p in (REPO / "bonds" / "spaces").rglob("*") if p.is_file()}
    assert shipped and shipped <= names
    assert "deploy/ray/serve_app.py" in names
