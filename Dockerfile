# syntax=docker/dockerfile:1
# One image for every fhir-outreach process: `serve` (api), `worker`, `beat`, `migrate`,
# `subscriptions ensure`, `demo`, ... The container runs the `outreach` CLI; the compose
# services differ only by their command. See docs/compose.md.
FROM python:3.11-slim

# uv from PyPI; pinned to the version that wrote uv.lock (lock revision 5).
RUN pip install --no-cache-dir "uv==0.13.9"

ENV PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /app

# Dependencies first, from the lock only: this layer is rebuilt when pyproject.toml or
# uv.lock change, not on every source edit.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project

# Then the project itself (what is copied is filtered by .dockerignore).
COPY . .
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev

# Run as an unprivileged user. The code and the virtualenv stay root-owned (read-only for the
# service); /app itself is writable so `outreach demo` can write its output next to it.
RUN groupadd --system --gid 10001 outreach \
    && useradd --system --uid 10001 --gid outreach --home-dir /home/outreach --create-home \
       --shell /usr/sbin/nologin outreach \
    && chown outreach:outreach /app
USER outreach

# The virtualenv's bin (outreach, celery, python) comes first on PATH.
ENV PATH="/app/.venv/bin:${PATH}"

EXPOSE 8000
ENTRYPOINT ["outreach"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
