# The two commands of README.md: `make launch` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two stamps: running needs the runtime dependencies only (make launch);
# the tests add the dev and cluster extras on top (make test).
STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
# spk bench compares the Linux personality with Qiling (the qiling extra).
QILING_STAMP := $(VENV)/.installed-qiling

.PHONY: launch test bench fuzz lint clean gcc chromium gdb qemu busybox libc-static

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,cluster]'
	touch $(TEST_STAMP)

$(QILING_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[qiling]'
	touch $(QILING_STAMP)

launch: $(STAMP) gcc busybox
	$(BIN)/spk launch partitions.toml

lint: $(TEST_STAMP)
	$(BIN)/ruff check spk spgs fuzz spk_review spk_tools tests
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(TEST_STAMP) lint gcc chromium gdb qemu busybox libc-static
	$(BIN)/pytest -q -n 2

# Debian packages the project needs, each installed once, quietly, when missing
# (sudo only when not root): gcc builds the C guests (spgs/cbuild.py), chromium
# renders the review's HTML in the tests, gdb drives the gdb stub's tests
# (docs/debugging.md), QEMU boots the full-virtualization reference kernel
# as the outside reference (docs/fullvirt.md), Debian's busybox-static is the
# unmodified Linux program the linux partitions run (examples/busybox.toml,
# docs/linux.md), and libc6-dev's static glibc links the gcc-built static test
# program (fuzz/campaigns/linux_probe.c). Each is known by its Debian package's
# status (a file alone would not tell busybox-static from the dynamic busybox).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
define apt_install
	@dpkg-query -W -f='$${Status}' $(1) 2>/dev/null | grep -q 'install ok installed' || { \
		$(SUDO) apt-get update -qq >/dev/null && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(1) >/dev/null; }
endef
gcc:
	$(call apt_install,gcc)
chromium:
	$(call apt_install,chromium)
gdb:
	$(call apt_install,gdb)
qemu:
	$(call apt_install,qemu-system-x86)
busybox:
	$(call apt_install,busybox-static)
libc-static: gcc
	$(call apt_install,libc6-dev)

bench: $(QILING_STAMP) gcc busybox libc-static
	$(BIN)/spk bench --json

# The long campaign: every campaign for FUZZ_SECONDS on all cores (make test runs a
# bounded seeded profile of each). Findings go to fuzz-findings/ as replay files.
FUZZ_SECONDS ?= 600
FUZZ_WORKERS ?= $(shell nproc)
FUZZ_SEED ?= $(shell date +%s)
fuzz: $(STAMP) gcc
	$(BIN)/spk fuzz --seconds $(FUZZ_SECONDS) --workers $(FUZZ_WORKERS) --seed $(FUZZ_SEED)

clean:
	rm -rf $(VENV) build *.egg-info
