# syntax=docker/dockerfile:1.7
# The public gateway, and the `llamagate` CLI the weights-download Job runs. No torch, no compiler:
# the final stage is the slim Python base plus one virtualenv copied from the build stage.
# Build from the repository root: docker build -f deploy/docker/gateway.Dockerfile -t llamagate-gateway:0.1.0 .
# Base images are pinned to an exact version tag; a release appends the digest it tested (@sha256:...).

FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY deploy/docker/requirements/ /requirements/
# Binary wheels only: nothing is compiled, so the build stage needs no toolchain either.
RUN python -m pip install --only-binary=:all: -r /requirements/build.txt \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --only-binary=:all: -r /requirements/gateway.txt
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto/ proto/
COPY sdk/ sdk/
COPY services/ services/
# The contract's wheel build generates the gRPC stubs. The image installs its own extra from
# those wheels with no index: every dependency must already be pinned in the venv above.
RUN python -m pip wheel --no-deps --no-build-isolation --wheel-dir /wheels ./proto ./sdk . \
 && /opt/venv/bin/pip install --no-index --find-links /wheels "llamagate-server[gateway]" llamagate \
 && /opt/venv/bin/python -m compileall -q /opt/venv

FROM python:3.11.14-slim-bookworm
RUN groupadd --gid 10001 llamagate \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin llamagate
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 50051 8080 9101
# For plain `docker run`; Kubernetes uses its own gRPC probes.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s CMD ["python", "-c", "import grpc,sys; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; s=g.HealthStub(grpc.insecure_channel('127.0.0.1:50051')).Check(h.HealthCheckRequest(), timeout=4).status; sys.exit(s != h.HealthCheckResponse.SERVING)"]
ENTRYPOINT ["python", "-m", "services.gateway"]
CMD ["--host=0.0.0.0", "--port=50051", "--metrics-port=9101"]
