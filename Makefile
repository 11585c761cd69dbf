# resume: the two commands a fresh clone needs are `make demo` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= configs/demo.yaml
OUT ?= runs/demo
PYTEST_ARGS ?=

.PHONY: venv test test-slow demo bench pipeline image lint clean

venv: $(STAMP)

# (Re)install when a requirement file changes. torch==2.13.0 resolves to the CPU wheel that the
# dev/CI machines carry; elsewhere pip takes it from PyPI.
$(STAMP): requirements.txt constraints.txt requirements-assets.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==26.3 || true
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt -c constraints.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-assets.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check src tests components pipelines bench scripts conftest.py
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/resume demo --config $(CONFIG) --out $(OUT)

bench: $(STAMP)
	$(BIN)/python bench/run_all.py --out bench/results.json

pipeline: $(STAMP)
	$(BIN)/python pipelines/resume_pipeline.py --out pipelines/resume_pipeline.yaml

image:
	@command -v docker >/dev/null && docker info >/dev/null 2>&1 || { echo "make image: no Docker engine here (docker info failed); build the image where Docker runs: docker build -t resume:latest ."; exit 1; }
	docker build -t $${IMAGE:-resume:latest} --build-arg BASE=$${BASE:-cuda} .

lint: $(STAMP)
	$(BIN)/ruff check src tests components pipelines bench scripts conftest.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
