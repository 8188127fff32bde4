# Everything a fresh machine needs is installed by these targets into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
# The CPU build of PyTorch, installed first so that the `train` extra's "torch>=2.2"
# is already met and never pulls a multi-GB CUDA build. On a GPU machine, install the
# torch build you want before `pip install -e '.[train]'`.
TORCH ?= torch==2.13.0
# The console's browser tests drive Debian's Chromium through Playwright (which cannot
# download its own browsers here); `make test` installs the package when it is missing.
CHROMIUM ?= /usr/bin/chromium
export OPENFT_CHROMIUM := $(CHROMIUM)
# Python graders run in bubblewrap's sandbox; the meteor metric reads WordNet 3.0 from
# Debian's wordnet-base (nothing is downloaded at run time). docs/graders.md.
BWRAP ?= /usr/bin/bwrap
WORDNET ?= /usr/share/wordnet/data.noun
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
# The tests use this PostgreSQL server; set it empty to skip the PostgreSQL tests.
export OPENFT_TEST_POSTGRES_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test

.PHONY: demo serve test lint bench-events clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet '$(TORCH)'
	$(BIN)/pip install --quiet -e '.[dev,train]'
	touch $@

$(CHROMIUM):
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y chromium || { \
	  $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y chromium; }

$(BWRAP):
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y bubblewrap || { \
	  $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y bubblewrap; }

$(WORDNET):
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y wordnet-base || { \
	  $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y wordnet-base; }

demo: $(STAMP)
	$(BIN)/python -m openft.demo

serve: $(STAMP) $(BWRAP) $(WORDNET)
	$(BIN)/openft serve

# pytest exits 5 when it collected no test: that is a failure here, never a pass.
# PYTEST_ARGS picks tests (`make test PYTEST_ARGS="-m 'not slow'"`); empty: all of them.
PYTEST_ARGS ?=
test: $(STAMP) $(CHROMIUM) $(BWRAP) $(WORDNET)
	$(BIN)/pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: no tests were collected" >&2; exit 1; fi; \
	exit $$status

# What CI checks before the tests: formatting, lint, types, and the import layers.
lint: $(STAMP)
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src tests bench
	$(BIN)/lint-imports

bench-events: $(STAMP)
	$(BIN)/python bench/events_bench.py

clean:
	rm -rf $(VENV) openft-data
