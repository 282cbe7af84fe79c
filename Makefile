# The two commands of README.md: `make launch` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: launch test bench fuzz lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

launch: $(STAMP)
	$(BIN)/spk launch partitions.toml

lint: $(STAMP)
	$(BIN)/ruff check spk spgs fuzz review spk_tools tests
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(STAMP) lint
	$(BIN)/pytest -q -n 2

bench: $(STAMP)
	$(BIN)/spk bench --json

# A longer, randomly seeded isolation campaign (make test runs a small seeded one).
fuzz: $(STAMP)
	SPK_FUZZ_EXAMPLES=300 $(BIN)/pytest -q tests/test_fuzz_isolation.py

clean:
	rm -rf $(VENV) build *.egg-info
