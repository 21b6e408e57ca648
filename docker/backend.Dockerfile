# syntax=docker/dockerfile:1.7
# The light backend: the API, the llm worker, Flower and `monkey migrate`. No torch.
# Kept out of api/ and named *.Dockerfile so that Railway keeps building with Railpack.
# Build from the repository root: docker build -f docker/backend.Dockerfile .
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv && useradd --create-home --uid 10001 monkey
WORKDIR /app

# The locked dependencies alone (requirements/backend.txt: the api, llm and ops extras,
# every file checked against its hash), so that editing the source does not reinstall
# them. `make lock` rewrites the file from uv.lock.
COPY requirements/backend.txt requirements/
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --require-hashes --no-deps -r requirements/backend.txt

COPY pyproject.toml README.md ./
COPY common ./common
COPY api ./api
COPY workers ./workers
COPY monkey ./monkey
RUN pip install --no-cache-dir --no-deps . && pip check

USER monkey
ENV PORT=8000
EXPOSE 8000
CMD ["sh", "-c", "exec monkey api --host :: --port ${PORT}"]
