# `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo
DEMO_PRESET ?= demo-specgan

.PHONY: setup browser demo lint test test-under-load bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || { apt-get update -qq && apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,studio]'
	touch $(STAMP)

# Debian's chromium and its driver, for the tests that drive the pages in a real browser.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver; }

demo: setup
	$(BIN)/wavegan train --workdir $(DEMO_DIR) --preset $(DEMO_PRESET)
	$(BIN)/wavegan generate --workdir $(DEMO_DIR) --n 12 --seed 0 --out $(DEMO_DIR)/clips --overwrite
	$(BIN)/wavegan evaluate --workdir $(DEMO_DIR) --n 600 --out $(DEMO_DIR)/eval
	$(BIN)/wavegan plot --workdir $(DEMO_DIR)
	@echo "clips: $(DEMO_DIR)/clips   previews: $(DEMO_DIR)/previews   report: $(DEMO_DIR)/eval/report.md   curves: $(DEMO_DIR)/curves.png"
	@echo "listen: open $(DEMO_DIR)/eval/report.html in a browser (no server needed); clips: $(DEMO_DIR)/clips/index.html"
	@echo "play the model: $(BIN)/wavegan studio --workdir $(DEMO_DIR)   (then open http://127.0.0.1:7860)"

# Formatting, lint and the import contracts (pyproject.toml), before any test runs.
lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache --no-logo

test: setup browser lint
	$(BIN)/python -m pytest -q tests

# The suite beside one busy loop per core: what a shared CI machine does to thread timing. Each hog
# also stops by itself once this recipe's shell is gone (even if it was killed with SIGKILL); the
# trap stops them on every normal exit, failure or Ctrl-C. The exit status is the suite's.
test-under-load: setup browser
	@hogs=""; \
	for i in $$(seq "$$(nproc)"); do \
	  sh -c 'while kill -0 $$PPID 2>/dev/null; do :; done' & hogs="$$hogs $$!"; \
	done; \
	trap 'kill $$hogs 2>/dev/null' EXIT; trap 'exit 130' INT; trap 'exit 143' TERM; \
	echo "running the tests beside $$(nproc) busy loops"; \
	$(BIN)/python -m pytest -q tests

bench: setup
	$(BIN)/python benchmarks/bench_generate.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_render.py
	$(BIN)/python benchmarks/bench_data.py

clean:
	rm -rf $(VENV) runs .pytest_cache
