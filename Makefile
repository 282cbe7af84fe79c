# The two commands of README.md: `make launch` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: launch test bench fuzz lint clean chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,cluster]'
	touch $(STAMP)

launch: $(STAMP)
	$(BIN)/spk launch partitions.toml

lint: $(STAMP)
	$(BIN)/ruff check spk spgs fuzz spk_review spk_tools tests
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(STAMP) lint chromium
	$(BIN)/pytest -q -n 2

# The review tests render report.html in headless Chromium, from Debian's
# packages; installed once, quietly (sudo only when not root).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
chromium:
	@test -x /usr/bin/chromium || { \
		$(SUDO) apt-get update -qq >/dev/null && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

bench: $(STAMP)
	$(BIN)/spk bench --json

# The long campaign: every campaign for FUZZ_SECONDS on all cores (make test runs a
# bounded seeded profile of each). Findings go to fuzz-findings/ as replay files.
FUZZ_SECONDS ?= 600
FUZZ_WORKERS ?= $(shell nproc)
FUZZ_SEED ?= $(shell date +%s)
fuzz: $(STAMP)
	$(BIN)/spk fuzz --seconds $(FUZZ_SECONDS) --workers $(FUZZ_WORKERS) --seed $(FUZZ_SEED)

clean:
	rm -rf $(VENV) build *.egg-info
