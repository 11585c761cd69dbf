# resume: the two commands a fresh clone needs are `make demo` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= configs/demo.yaml
OUT ?= runs/demo
PYTEST_ARGS ?=

.PHONY: venv test test-slow demo bench pipeline image image-base lint clean

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

# Docker where an engine runs, else buildah (chroot isolation and the vfs driver: no daemon, no overlay
# mounts, works inside a container). With buildah and BASE=cpu the base is a Debian bookworm root
# filesystem that mmdebstrap builds from Debian's archive (image-base) unless PYTHON_IMAGE names another,
# so no container registry is needed. BUILD_ARGS adds build arguments (TORCH_INDEX, PIP_*), BUILDAH_OPTS
# buildah-only options (e.g. -v /opt/wheels:/opt/wheels:ro for a local wheel directory).
BUILDAH := buildah --storage-driver vfs
DEBIAN_BASE ?= localhost/resume-debian-python:bookworm
SUBMAKE := $(MAKE)   # not $(MAKE) in the recipe, so that `make -n image` only prints it

image:
	@if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
	  set -x; docker build -t $${IMAGE:-resume:latest} --build-arg BASE=$${BASE:-cuda} $(BUILD_ARGS) . ; \
	elif command -v buildah >/dev/null 2>&1; then \
	  echo "make image: no Docker engine here (docker info failed): building with buildah"; \
	  base=""; \
	  if [ "$${BASE:-cuda}" = cpu ] && [ -z "$${PYTHON_IMAGE:-}" ]; then \
	    $(BUILDAH) inspect --type image $(DEBIAN_BASE) >/dev/null 2>&1 || $(SUBMAKE) --no-print-directory image-base || exit 1; \
	    base="--build-arg PYTHON_IMAGE=$(DEBIAN_BASE)"; \
	  elif [ -n "$${PYTHON_IMAGE:-}" ]; then base="--build-arg PYTHON_IMAGE=$${PYTHON_IMAGE}"; fi; \
	  set -x; $(BUILDAH) build --isolation chroot -t $${IMAGE:-resume:latest} \
	    --build-arg BASE=$${BASE:-cuda} $$base $(BUILD_ARGS) $(BUILDAH_OPTS) . ; \
	else \
	  echo "make image: no Docker engine (docker info failed) and no buildah; install one (Debian: apt-get install buildah mmdebstrap)"; \
	  exit 1; \
	fi

# The CPU image's base for buildah: Debian 12 with its CPython 3.11 (3.11.2; the python:3.11.13-slim
# image has 3.11.13), linked at /usr/local/bin/python3.11 where the Dockerfile's base-cpu expects it.
image-base:
	@command -v mmdebstrap >/dev/null 2>&1 || { echo "make image-base: needs mmdebstrap (Debian: apt-get install mmdebstrap)"; exit 1; }
	mkdir -p build
	mmdebstrap --variant=apt --include=python3.11,python3.11-venv,ca-certificates,libgomp1,passwd \
	  --customize-hook='chroot "$$1" ln -sf /usr/bin/python3.11 /usr/local/bin/python3.11' \
	  --customize-hook='rm -rf "$$1"/var/lib/apt/lists/* "$$1"/var/cache/apt/*.bin' \
	  bookworm build/debian-bookworm-python.tar http://deb.debian.org/debian
	ctr=$$($(BUILDAH) from scratch) && $(BUILDAH) add $$ctr build/debian-bookworm-python.tar / \
	  && $(BUILDAH) config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd /bin/bash $$ctr \
	  && $(BUILDAH) commit -q $$ctr $(DEBIAN_BASE) && $(BUILDAH) rm $$ctr
	rm -f build/debian-bookworm-python.tar

lint: $(STAMP)
	$(BIN)/ruff check src tests components pipelines bench scripts conftest.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
