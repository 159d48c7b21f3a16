# flowerclf training (and everything else: data, evaluate, export), CPU build of PyTorch.
#
#   docker build -f docker/train.Dockerfile -t flowerclf-train .
#   docker run --rm -v "$PWD/work:/work" flowerclf-train \
#       flowerclf train experiment=tf_flowers_fast data.root=/work/data paths.output_dir=/work/outputs
#
# Installs the `train` and `export` extras (and the pretrained `weights`): every command but
# serve and ui. The default base is the serving image's (an exact Python, pinned by digest).
#
# GPU variant: build with
#   --build-arg BASE=pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime --build-arg TORCH_INDEX=none
# (that base already has a CUDA PyTorch, so the CPU wheels are skipped) and run with
# `docker run --gpus all ... flowerclf train trainer=gpu`.

ARG BASE=python:3.11.15-slim-trixie@sha256:db3ff2e1800a8581e2c48a27c3995339d47bdf046da21c7627accd3d51053a93
FROM ${BASE}
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg
WORKDIR /opt/flowerclf
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN if [ "$TORCH_INDEX" != "none" ]; then \
        pip install --no-cache-dir torch torchvision --index-url "$TORCH_INDEX"; \
    fi \
    && pip install --no-cache-dir ".[train,export,weights]" \
    && useradd --create-home --uid 10001 flowerclf \
    && mkdir -p /work && chown flowerclf /work
USER flowerclf
WORKDIR /work
ENV FLOWERCLF_DATA_DIR=/work/data
HEALTHCHECK --interval=60s --timeout=20s --retries=3 CMD flowerclf --version || exit 1
CMD ["flowerclf", "--help"]
