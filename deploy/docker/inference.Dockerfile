# syntax=docker/dockerfile:1.7
# The model server (and, through the llama-guard component, Llama Guard): torch 2.13.0's CUDA build
# from PyPI, which brings its own CUDA 13.0 user-space libraries (cuBLAS, cuDNN, NCCL, Triton) as
# pinned wheels. The base is CUDA's smallest image of the same major version: it adds only the
# container-toolkit settings that expose the node's driver. Python is Ubuntu 24.04's 3.12.
# Build from the repository root: docker build -f deploy/docker/inference.Dockerfile -t llamagate-inference:0.1.0 .
# Base images are pinned to an exact version tag; a release appends the digest it tested (@sha256:...).

FROM nvidia/cuda:13.0.1-base-ubuntu24.04 AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
# The distribution's python3.12 follows Ubuntu 24.04's security updates; the base image tag fixes the
# release, so apt versions are deliberately not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 python3.12-venv \
 && rm -rf /var/lib/apt/lists/*
COPY deploy/docker/requirements/ /requirements/
RUN python3.12 -m venv /opt/build \
 && /opt/build/bin/pip install --only-binary=:all: -r /requirements/build.txt \
 && python3.12 -m venv /opt/venv \
 && /opt/venv/bin/pip install --only-binary=:all: -r /requirements/inference.txt
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto/ proto/
COPY services/ services/
# The contract's wheel build generates the gRPC stubs. The image installs its own extra from
# those wheels with no index: every dependency must already be pinned in the venv above.
RUN /opt/build/bin/python -m pip wheel --no-deps --no-build-isolation --wheel-dir /wheels ./proto . \
 && /opt/venv/bin/pip install --no-index --find-links /wheels "llamagate-server[inference,safety]" \
 && /opt/venv/bin/python -m compileall -q /opt/venv

FROM nvidia/cuda:13.0.1-base-ubuntu24.04
ENV DEBIAN_FRONTEND=noninteractive
# Only the interpreter: no venv module, pip or compiler in the final image.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 llamagate \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin llamagate
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 HF_HOME=/tmp/hf
USER 10001:10001
EXPOSE 50052 9102
HEALTHCHECK --interval=10s --timeout=5s --start-period=1800s CMD ["python", "-c", "import grpc,sys; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; s=g.HealthStub(grpc.insecure_channel('127.0.0.1:50052')).Check(h.HealthCheckRequest(), timeout=4).status; sys.exit(s != h.HealthCheckResponse.SERVING)"]
# MP 1 by default; Kubernetes overrides the command with `torchrun --nproc_per_node=$(MODEL_PARALLEL)`.
ENTRYPOINT ["torchrun", "--standalone", "--nnodes=1", "--nproc_per_node=1", "-m", "services.inference"]
CMD ["--ckpt-dir=/models/llama-2-7b-chat", "--tokenizer-path=/models/tokenizer.model", "--host=0.0.0.0", "--port=50052", "--metrics-port=9102"]
