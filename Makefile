# Two entry points for a fresh machine: `make demo` (the main job) and `make test` (the test suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Golden parity fixtures produced by the official code; the tests fail (never skip) when they are missing.
export FUSIONFRAMES_GOLDEN ?= $(abspath ../shared/golden)

.PHONY: demo demo-engine test test-fast lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned to the CPU build available offline here; any torch >= 2.4 works for users
	$(PY) -m pip install -q torch==2.13.0 || $(PY) -m pip install -q "torch>=2.4"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

# A real ComfyUI (installed into .host/) runs the shipped 1.1 text-to-video workflow through its HTTP API.
# DEMO_ARGS=--keep-running leaves the server up for a browser.
demo: $(STAMP)
	$(PY) scripts/comfyui_demo.py $(DEMO_ARGS)

# The same pipeline without ComfyUI, through the engine's command line.
demo-engine: $(STAMP)
	$(PY) -m fusionframes demo --release 1.1 --fps medium --width 64 --height 64 --keyframes 8 --seed 7 \
		--prompt "a red circle moving right" --out out/demo_t2v_medium.mp4

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) out demo_models .pytest_cache .ruff_cache
