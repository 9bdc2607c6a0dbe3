# The README's two commands: `make serve` and `make test`. Everything else is a step of those.
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
SPACE ?= starter_e5

.PHONY: install test lint serve bonds bench soak clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install.sh
	VENV=$(VENV) bash scripts/install.sh

lint: install
	$(BIN)/ruff check bonds training service tests bench

test: lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

serve: install
	$(BIN)/freebind serve --host $(HOST) --port $(PORT) --space $(SPACE)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info

bonds: install
	BIN=$(BIN) bash scripts/make_bonds.sh

bench: install  # speed and quality figures (~45 min on 2 cores): `make bench PARTS=search` runs one part
	$(BIN)/python -m bench $(PARTS)

soak: install  # long reliability runs (~15 min): schema fuzzing at length, 64-client load, 20 kill -9 trials
	FREEBIND_FUZZ_EXAMPLES=300 $(BIN)/python -m pytest -q tests/reliability/test_schema_fuzz.py
	$(BIN)/python bench/soak.py $(SOAK_ARGS)
