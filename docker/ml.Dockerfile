# syntax=docker/dockerfile:1.7
# The ML service: Celery workers on the gpu queue, with torch and the model libraries.
# Kept out of workers/ and named *.Dockerfile so that Railway keeps building with Railpack.
# Build from the repository root:
#   docker build -f docker/ml.Dockerfile .                       (CUDA torch from PyPI)
#   docker build -f docker/ml.Dockerfile \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .   (CPU only)
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

# Empty: PyPI's torch, which bundles the CUDA libraries (the host needs only the
# NVIDIA driver and container toolkit). The CPU index gives a wheel a tenth the size.
ARG TORCH_INDEX_URL=

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HF_HOME=/data/huggingface
RUN python -m venv /opt/venv \
    && useradd --create-home --uid 10001 monkey \
    && mkdir -p /data/huggingface && chown -R monkey /data
WORKDIR /app

# The locked dependencies alone, so that editing the source does not reinstall torch:
# requirements/ml.txt (the ml extra without torch, every file checked against its hash),
# then torch 2.13.0 pinned by requirements/torch.txt, by version alone since PyPI's build
# and the CPU index's are different files (see scripts/lock.py). From PyPI, the same file
# pins torch's CUDA libraries. `make lock` rewrites both files from uv.lock.
COPY requirements/ml.txt requirements/torch.txt requirements/
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --require-hashes --no-deps -r requirements/ml.txt \
    && pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
         -c requirements/torch.txt torch

COPY pyproject.toml README.md ./
COPY common ./common
COPY api ./api
COPY workers ./workers
COPY monkey ./monkey
RUN pip install --no-cache-dir --no-deps . && pip check

USER monkey
CMD ["monkey", "worker", "--queues", "gpu"]
