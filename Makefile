# The two set-up commands in README: `make demo` and `make test`. Each installs what it needs.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")

.PHONY: demo test lint bench sync uv

uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv

sync: uv
	@$(UV) sync --frozen --quiet

demo: sync
	$(UV) run outreach demo

test: sync
	$(UV) run pytest

lint: sync
	$(UV) run ruff check .
	$(UV) run mypy
	$(UV) run lint-imports --no-cache

bench: sync
	$(UV) run python -m bench
