# Two entry points for a fresh machine; both create .venv and install what they need.
#   make demo   fine-tune on the embedded default data and export (the main job)
#   make test   lint and run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test lint docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The tests compare against torchvision's reference models and write real torchvision state
# dicts. torch is a test-only dependency, never a runtime one; torchvision goes in without
# its dependencies because its compiled ops do not match the CPU torch build (the tests
# import only its pure-Python model definitions). timm (the reference for timm checkpoints)
# goes in without its dependencies too: they are torch, torchvision and packages zoo has.
# tests/test_report_browser.py renders report.html in a real browser (headless Chromium,
# Debian's package) to check every inline image decodes and every link resolves; without
# chromium that test fails (it does not skip), so a fresh machine gets it here.
$(TEST_STAMP): $(STAMP)
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet --no-deps "torchvision==0.28.0"
	$(BIN)/pip install --quiet --no-deps "timm==1.0.31"
	touch $(TEST_STAMP)

demo: $(STAMP)
	$(BIN)/zoo demo

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint $(TEST_STAMP)
	$(BIN)/python -m pytest -q

# The documentation site into site/ (strict: any warning fails). The model catalogue is
# generated from the registry; the first build describes every model (about a minute) and
# caches the result in build/docs-cache/.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) site build *.egg-info
