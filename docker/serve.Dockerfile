# flowerclf REST service, CPU, ONNX Runtime backend. Small: no torch in the image.
#
#   docker build -f docker/serve.Dockerfile -t flowerclf-serve .
#   docker run --rm -p 8000:8000 -v "$PWD/models/tf_flowers:/model:ro" flowerclf-serve
#
# GPU variant: FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 (plus python3-pip) and
# replace onnxruntime with onnxruntime-gpu in requirements-serve.txt; the ONNX backend then
# picks the CUDA execution provider by itself. Run with `docker run --gpus all ...`.

FROM python:3.11-slim AS build
WORKDIR /build
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FLOWERCLF_SERVE_MODEL=/model \
    FLOWERCLF_SERVE_HOST=0.0.0.0 \
    FLOWERCLF_SERVE_PORT=8000
COPY docker/requirements-serve.txt /tmp/requirements-serve.txt
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir -r /tmp/requirements-serve.txt \
    && pip install --no-cache-dir --no-deps /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels /tmp/requirements-serve.txt \
    && useradd --create-home --uid 10001 flowerclf
USER flowerclf
WORKDIR /home/flowerclf
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=4).status != 200)"
CMD ["python", "-m", "flowerclf", "serve"]
