# Tessera developer entry points. Every target that needs the toolchain runs `setup` first,
# which is idempotent and takes well under a second when nothing changed.
PY := .venv/bin/python
export TESSERA_HOME ?= $(CURDIR)/.tessera

.PHONY: setup run test lint bench clean stubs

setup:
	@python3 scripts/setup.py

run: setup
	@$(PY) -m services.common.cli run

test: setup
	@$(PY) -m pytest -q $(PYTEST_ARGS)

lint: setup
	@.venv/bin/ruff check .
	@.venv/bin/buf lint
	@if [ -d helm/tessera ]; then .venv/bin/helm lint --strict helm/tessera >/dev/null && echo "helm lint: ok"; fi

bench: setup
	@$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf .venv gen build .tessera .pytest_cache .ruff_cache tools/cypher-lint/node_modules
