# syntax=docker/dockerfile:1.7
# The safety service on CPU: torch's CPU build, transformers and the embedded classifier's encoder
# (shipped inside a PyPI package, so nothing is fetched from a model hub at run time). For Llama
# Guard on a GPU the llama-guard component runs the same code from the inference image instead.
# Build from the repository root: docker build -f deploy/docker/safety.Dockerfile -t llamagate-safety:0.1.0 .
# Base images are pinned to an exact version tag; a release appends the digest it tested (@sha256:...).

FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY deploy/docker/requirements/ /requirements/
# torch==2.13.0+cpu exists only on the PyTorch CPU index; everything else comes from PyPI.
RUN python -m pip install --only-binary=:all: -r /requirements/build.txt \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --only-binary=:all: \
      --extra-index-url https://download.pytorch.org/whl/cpu -r /requirements/safety.txt
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto/ proto/
COPY services/ services/
# The contract's wheel build generates the gRPC stubs. The image installs its own extra from
# those wheels with no index: every dependency must already be pinned in the venv above.
RUN python -m pip wheel --no-deps --no-build-isolation --wheel-dir /wheels ./proto . \
 && /opt/venv/bin/pip install --no-index --find-links /wheels "llamagate-server[safety]" \
 && /opt/venv/bin/python -m compileall -q /opt/venv

FROM python:3.11.14-slim-bookworm
RUN groupadd --gid 10001 llamagate \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin llamagate
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 HF_HOME=/tmp/hf
USER 10001:10001
EXPOSE 50053 9103
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s CMD ["python", "-c", "import grpc,sys; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; s=g.HealthStub(grpc.insecure_channel('127.0.0.1:50053')).Check(h.HealthCheckRequest(), timeout=4).status; sys.exit(s != h.HealthCheckResponse.SERVING)"]
ENTRYPOINT ["python", "-m", "services.safety"]
CMD ["--policy=/opt/venv/lib/python3.11/site-packages/services/safety/policies/llama_guard.yaml", "--classifier=embedded", "--host=0.0.0.0", "--port=50053", "--metrics-port=9103"]
