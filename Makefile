# Everything a fresh machine needs is installed by these targets into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
# The tests use this PostgreSQL server; set it empty to skip the PostgreSQL tests.
export OPENFT_TEST_POSTGRES_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test

.PHONY: demo serve test lint bench-events clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(STAMP)
	$(BIN)/python -m openft.demo

serve: $(STAMP)
	$(BIN)/openft serve

# pytest exits 5 when it collected no test: that is a failure here, never a pass.
test: $(STAMP)
	$(BIN)/pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: no tests were collected" >&2; exit 1; fi; \
	exit $$status

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src

bench-events: $(STAMP)
	$(BIN)/python bench/events_bench.py

clean:
	rm -rf $(VENV) openft-data
