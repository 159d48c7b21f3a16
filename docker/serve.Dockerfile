# flowerclf REST service, CPU, ONNX Runtime backend. Small: no torch in the image.
#
#   docker build -f docker/serve.Dockerfile -t flowerclf-serve .
#   docker run --rm -p 8000:8000 -v "$PWD/models/tf_flowers:/model:ro" flowerclf-serve
#
# What it installs is pyproject.toml's base install plus the `serve` extra, at the versions
# pinned in docker/constraints-serve.txt (regenerate with `python docker/pin_serve_constraints.py`
# after changing the dependencies).
#
# The base image is pinned to an exact Python and Debian release and by digest, so a rebuild
# starts from the same bytes. To move it (security updates of the OS packages), pick the new
# tag and take its digest from `docker buildx imagetools inspect python:<tag>`.
#
# GPU variant: a CUDA runtime image with Python 3.11 and pip as PYTHON_IMAGE (e.g. built
# FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04), and after the install swap onnxruntime
# for onnxruntime-gpu of the same version; the ONNX backend then picks the CUDA execution
# provider by itself. Run with `docker run --gpus all ...`.

ARG PYTHON_IMAGE=python:3.11.15-slim-trixie@sha256:db3ff2e1800a8581e2c48a27c3995339d47bdf046da21c7627accd3d51053a93

FROM ${PYTHON_IMAGE} AS build
WORKDIR /build
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
# Why 0.0.0.0: inside the container 127.0.0.1 is the container's own loopback, which
# `docker run -p` cannot forward to; the container's network namespace is the boundary.
# Publish only where you mean to (`-p 127.0.0.1:8000:8000` keeps it on the host), and
# before publishing further set an API key (`-e FLOWERCLF_SERVE_API_KEY=...` or a secret):
# then every route but /health and /ready (the probes) needs `Authorization: Bearer KEY`
# or `X-API-Key: KEY`. /docs, /openapi.json and /metrics are off here; turn them on with
# FLOWERCLF_SERVE_DOCS=true / FLOWERCLF_SERVE_METRICS=true (behind the key, if one is set).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FLOWERCLF_SERVE_MODEL=/model \
    FLOWERCLF_SERVE_HOST=0.0.0.0 \
    FLOWERCLF_SERVE_PORT=8000 \
    FLOWERCLF_SERVE_DOCS=false \
    FLOWERCLF_SERVE_METRICS=false
COPY docker/constraints-serve.txt /tmp/constraints-serve.txt
COPY --from=build /wheels /tmp/wheels
# The wheel path with [serve]: pip takes the dependencies from the wheel's own metadata
# (pyproject.toml), never a flowerclf from the package index.
RUN pip install --no-cache-dir --constraint /tmp/constraints-serve.txt \
        "$(ls /tmp/wheels/flowerclf-*.whl)[serve]" \
    && rm -rf /tmp/wheels /tmp/constraints-serve.txt \
    && useradd --create-home --uid 10001 flowerclf
USER flowerclf
WORKDIR /home/flowerclf
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=4).status != 200)"
CMD ["python", "-m", "flowerclf", "serve"]
