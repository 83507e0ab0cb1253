# syntax=docker/dockerfile:1
# Tessera service image: one image, three services (`tessera serve identity|consent|profile`).
#   docker build -t tessera:0.1.0 .
# The final stage has no compiler, no pip and no build inputs; it runs as uid 10001 and writes only
# to /tmp (HOME, TMPDIR and TESSERA_HOME), so it works with readOnlyRootFilesystem.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src

# Code generator and the google/api + google/rpc protos (googleapis-common-protos ships the .proto
# files next to its modules; grpc_tools adds the protobuf well-known types itself).
COPY constraints.txt ./
RUN python -m pip install -c constraints.txt grpcio-tools googleapis-common-protos

COPY protos/ protos/
RUN set -eux; \
    include="$(python -c 'import google.rpc.status_pb2 as m, os; print(os.path.dirname(os.path.dirname(os.path.dirname(m.__file__))))')"; \
    mkdir -p gen/tessera; \
    cd protos; \
    python -m grpc_tools.protoc -I. -I"$include" \
        --python_out=../gen --pyi_out=../gen --grpc_python_out=../gen \
        $(find . -name '*.proto' | sed 's|^\./||' | sort); \
    cd ..; \
    find gen/tessera -type d -exec touch '{}/__init__.py' ';'

# The application in its own virtualenv (the exact versions CI tested), copied whole into the final stage.
COPY pyproject.toml README.md ./
COPY services/ services/
RUN set -eux; \
    python -m venv /opt/tessera; \
    /opt/tessera/bin/pip install -c constraints.txt .; \
    /opt/tessera/bin/pip uninstall -y pip setuptools wheel || true; \
    /opt/tessera/bin/tessera --help >/dev/null

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="tessera" \
      org.opencontainers.image.description="Tessera identity, consent and profile gRPC services"

RUN set -eux; \
    python -m pip uninstall -y pip setuptools wheel || true; \
    groupadd --system --gid 10001 tessera; \
    useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin tessera

COPY --from=builder /opt/tessera /opt/tessera

ENV PATH=/opt/tessera/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp \
    TESSERA_HOME=/tmp/tessera \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TESSERA_SERVER_HOST=0.0.0.0

USER 10001:10001
WORKDIR /tmp
# gRPC (identity, consent, profile), plaintext health-only port, Prometheus metrics.
EXPOSE 50051 50052 50053 8086 9464
ENTRYPOINT ["tessera"]
CMD ["serve", "identity"]
