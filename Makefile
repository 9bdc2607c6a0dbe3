# The README's two commands: `make serve` and `make test`. Everything else is a step of those.
VENV ?= .venv
BIN := $(VENV)/bin
# `make serve HOST=0.0.0.0 PORT=9000 SPACE=starter_in_e5`: each becomes a flag only when given, so without
# them FREEBIND_HOST / FREEBIND_PORT / FREEBIND_SPACES (or the defaults, `freebind settings`) apply
SERVE_FLAGS = $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT)) $(foreach s,$(SPACE),--space $(s))

.PHONY: install install-test test lint serve lock bonds bench soak clean

# Each profile installs from its lock (locks/<profile>.txt, hash-checked): `serve` the service and its
# offline models, `test` adds the lint/test/bench tools, Milvus Lite and Chromium.
install: $(VENV)/.installed-serve
install-test: $(VENV)/.installed-test

$(VENV)/.installed-%: locks/%.txt pyproject.toml scripts/install.sh
	VENV=$(VENV) FREEBIND_PROFILE=$* bash scripts/install.sh

lint: install-test
	$(BIN)/ruff check bonds training service tests bench harness deploy

test: lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

serve: install
	$(BIN)/freebind serve $(SERVE_FLAGS)

# After a change to pyproject.toml's dependencies, or to move to newer releases on purpose: regenerates
# every lock in locks/ (uv, from PyPI; EXCLUDE_NEWER=YYYY-MM-DD locks what was out on that day)
lock: install-test
	UV=$(BIN)/uv bash scripts/lock.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info

bonds: install-test  # training reads WordNet and espeak-ng speech (the test profile's system packages)
	BIN=$(BIN) bash scripts/make_bonds.sh

bench: install-test  # speed and quality figures (~45 min on 2 cores): `make bench PARTS=search` runs one part
	$(BIN)/python -m bench $(PARTS)

soak: install-test  # long reliability runs (~15 min): schema fuzzing at length, 64-client load, 20 kill -9 trials
	FREEBIND_FUZZ_EXAMPLES=300 $(BIN)/python -m pytest -q tests/reliability/test_schema_fuzz.py
	$(BIN)/python bench/soak.py $(SOAK_ARGS)
