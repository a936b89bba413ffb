# Two commands a newcomer types: `make demo` and `make test`. Both set up from nothing.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Two pytest-xdist workers: the suite waits on servers and subprocesses about half the time.
TEST_WORKERS ?= 2

.PHONY: demo test lint install bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	# torch==2.13.0 exactly: a CPU wheel of it is on this machine's disk; other versions pull CUDA.
	$(BIN)/python -m pip install -q -e ".[test,torch,postgres,served]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m rsp.demo

lint: $(STAMP)
	$(BIN)/ruff check policy tasks flows rsp tests bench
	$(BIN)/mypy policy tasks flows rsp

# ruff first (seconds); mypy (2.5 min on a cold cache) runs beside the tests, and either failing fails.
test: $(STAMP)
	$(BIN)/ruff check policy tasks flows rsp tests bench
	@$(BIN)/mypy policy tasks flows rsp > $(VENV)/mypy.log 2>&1 & types=$$!; \
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder; tests=$$?; \
	wait $$types; typed=$$?; echo "mypy policy tasks flows rsp:"; cat $(VENV)/mypy.log; \
	test $$tests -eq 0 && test $$typed -eq 0

bench: $(STAMP)
	@for f in bench/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .rsp
