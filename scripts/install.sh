#!/usr/bin/env bash
# One install path for a fresh machine, `make`, CI and the Dockerfile alike.
#   VENV (default .venv)   where the virtual environment goes
#   FREEBIND_CUDA=1        install the CUDA torch build and faiss-gpu instead of the CPU ones
#   FREEBIND_SKIP_APT=1    do not touch system packages
#   FREEBIND_EXTRAS        which extras to install (default models,dev; the Docker image uses models,milvus)
#   TORCH_INDEX_URL        where torch comes from (the Docker CPU image: https://download.pytorch.org/whl/cpu;
#                          PyPI's Linux torch is the CUDA build, gigabytes of nvidia wheels)
set -euo pipefail
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

# System packages: libsndfile for audio decoding, WordNet glosses and espeak-ng speech for
# bond training data and tests, chromium for the playground's browser test.
APT_PACKAGES="libsndfile1 wordnet-base espeak-ng sound-theme-freedesktop chromium"
if [ "${FREEBIND_SKIP_APT:-0}" != 1 ] && command -v apt-get >/dev/null 2>&1; then
  missing=""
  for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
  fi
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip -q --disable-pip-version-check"
$PIP install --upgrade pip >/dev/null

# torch first and pinned: an unpinned torch drags in gigabytes of CUDA wheels.
$PIP install "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
$PIP install -e ".[${FREEBIND_EXTRAS:-models,dev}]"
if [ "${FREEBIND_CUDA:-0}" = 1 ]; then
  # faiss-cpu (a dependency) and faiss-gpu-cu12 install the same `faiss` package: the GPU one goes last
  $PIP uninstall -y faiss-cpu >/dev/null
  $PIP install --force-reinstall --no-deps faiss-gpu-cu12
fi
touch "$VENV/.installed"
