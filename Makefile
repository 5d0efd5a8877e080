# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The CPU build of torch; a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: setup browser run test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

run: setup
	$(BIN)/gradstep fit

# Debian's Chromium, for the report's browser test; where it cannot be had (not root, no apt),
# that one test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
	    >/dev/null 2>&1; } || \
	  echo "chromium not installed: the report's browser test will be skipped"

test: setup browser
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

bench: setup
	$(BIN)/python -m pip install -q -e '.[peers]'
	$(BIN)/python bench/peers.py
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/checkpoint.py
	$(BIN)/python bench/ddp.py
	$(BIN)/python bench/grad_norm.py
	$(BIN)/python bench/lab.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
