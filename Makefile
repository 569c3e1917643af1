# BreedRecognizer: `make run` serves the shipped model, `make test` runs lint + the test suite.
# Installs go into $(VENV) and are skipped while the requirements files are unchanged (stamps).

VENV ?= .venv
PYTHON ?= python3
PORT ?= 8000
HOST ?= 127.0.0.1
BIN := $(VENV)/bin

.DEFAULT_GOAL := help
.PHONY: help run test lint format bench soak

help:
	@echo "make run    - install serving requirements into $(VENV) and serve http://$(HOST):$(PORT)"
	@echo "make test   - install dev requirements, ruff check, pytest (whole suite)"
	@echo "make lint   - ruff check + ruff format --check"
	@echo "make format - ruff format + ruff check --fix"
	@echo "make bench  - load benchmark (~5 min, under the CPU lock) -> results/bench/SUMMARY.md"
	@echo "make soak   - 5 min at saturation + slow clients + Telegram (CPU lock) -> results/bench/soak.md"
	@echo "make container-test - build and run both images (CPU lock) -> results/container.md"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Serving ONNX artifacts only (no torch): what `make run` needs.
$(VENV)/.stamp-serving: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install -r requirements.txt
	touch $@

DEV_REQUIREMENTS := requirements.txt requirements-torchscript.txt requirements-train.txt \
	requirements-dev.txt
$(VENV)/.stamp-dev: $(DEV_REQUIREMENTS) | $(BIN)/python
	$(BIN)/python -m pip install -r requirements-dev.txt
	touch $@

# The shipped ONNX copies of the .pt, both committed: fp32 (`python -m
# training.release.onnx_export`) and static int8 (`python -m training.release.quantize`; see
# docs/benchmark.md). Without MODEL_URI the service serves the one MODEL_PRECISION picks.
INT8_MODEL := model/efficientnet_lite0_imagewoof.int8.onnx
ONNX_MODEL := model/efficientnet_lite0_imagewoof.onnx

# Serves like the container does; MODEL_URI=... overrides it (a .pt needs torch:
# pip install -r requirements-torchscript.txt).
run: $(VENV)/.stamp-serving
	HOST=$(HOST) PORT=$(PORT) $(BIN)/gunicorn --config gunicorn.conf.py 'app:create_app()'

test: $(VENV)/.stamp-dev
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(VENV)/.stamp-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.stamp-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# benchmarks/bench.py takes /tmp/breedrec-cpu.lock itself for the whole run.
bench: $(VENV)/.stamp-dev
	$(BIN)/python -m benchmarks.bench --int8 $(INT8_MODEL) --fp32 $(ONNX_MODEL)

# benchmarks/soak.py takes /tmp/breedrec-cpu.lock itself for the whole run.
soak: $(VENV)/.stamp-dev
	$(BIN)/python -m benchmarks.soak --model $(ONNX_MODEL)

# Builds both images of the Dockerfile with podman, the default (ONNX only) and
# SERVING=torchscript, and runs them (tests/test_container.py; ~5 min, heavy, under the CPU
# lock): writes results/container.md. container/tools.sh installs podman, runc and debootstrap.
.PHONY: container-test
container-test: $(VENV)/.stamp-dev
	container/tools.sh
	flock /tmp/breedrec-cpu.lock $(BIN)/python -m pytest -rs -s tests/test_container.py
