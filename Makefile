# Monkey Coder: `make run` starts the whole stack, `make test` runs every test.
# Both work on a fresh machine with Python 3.11+: they create .venv and install first.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The lock: uv.lock, exported to requirements/*.txt (see scripts/lock.py). `make lock`
# refreshes it with this uv, kept in .tools/.
LOCK   := requirements/dev.txt requirements/torch.txt
UV_VERSION := 0.13.9
UV     := .tools/uv-$(UV_VERSION)/bin/uv
WEB_SOURCES := $(shell find web -type f \( -name '*.ts' -o -name '*.tsx' -o -name '*.css' -o -name '*.json' -o -name '*.mjs' -o -name '*.js' \) -not -path 'web/node_modules/*' -not -path 'web/out/*' -not -path 'web/.next/*' 2>/dev/null)

.PHONY: run test bench install lock web lint clean

run: install web
	$(VENV)/bin/monkey up

test: install web
	$(VENV)/bin/pytest

bench: install
	$(PY) bench/overhead.py
	@for b in batching batch batch_echo debug_embed load cold_start webhooks retention fairness ceiling; do \
	  if [ -f bench/$$b.py ]; then $(PY) bench/$$b.py || exit 1; fi; \
	done

install: $(STAMP)

# Every extra from the lock, each file checked against its hash; then torch 2.13.0, by
# version alone (the reason is in scripts/lock.py); then the project, editable.
$(STAMP): pyproject.toml $(LOCK)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Python 3.11 or newer is needed (found $$($(PYTHON) --version))"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements/dev.txt
	$(PY) -m pip install --quiet -c requirements/torch.txt torch
	$(PY) -m pip install --quiet --no-deps -e .
	@$(PY) -m pip check || \
	  { echo "the lock does not satisfy pyproject.toml: run make lock"; exit 1; }
	touch $(STAMP)

# Resolve again from PyPI and rewrite uv.lock and requirements/*.txt, keeping the pins
# pyproject.toml still allows; UPGRADE=1 takes the newest releases it allows.
lock: $(UV)
	$(PYTHON) scripts/lock.py --uv $(UV) $(if $(UPGRADE),--upgrade)

$(UV):
	$(PYTHON) -m venv .tools/uv-$(UV_VERSION)
	.tools/uv-$(UV_VERSION)/bin/pip install --quiet uv==$(UV_VERSION)

# The web UI (a static export) served by the API on the same origin; skipped with a
# note where Node.js is missing. The web service's own build sets NEXT_PUBLIC_API_URL.
# `npm ci` runs when node_modules is missing or older than package-lock.json (npm
# writes node_modules/.package-lock.json on each install), so a new dependency arrives.
web: web/out/index.html

web/out/index.html: $(WEB_SOURCES)
	@if [ ! -f web/package.json ]; then echo "no web UI sources"; \
	elif ! command -v npm >/dev/null; then echo "npm not found: the web UI is not built (install Node.js 20)"; \
	else cd web && { [ node_modules/.package-lock.json -nt package-lock.json ] || npm ci --no-audit --no-fund; } && NEXT_PUBLIC_API_URL= NEXT_TELEMETRY_DISABLED=1 npm run build; fi

# mypy reads its files and settings from pyproject.toml ([tool.mypy]).
lint: install
	$(VENV)/bin/ruff check common api workers monkey tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf .monkey web/out web/.next .pytest_cache
