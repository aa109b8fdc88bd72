# zapgate: `zapgate serve` as a non-root user; state on a volume, plaintext sessions on tmpfs.
#
#   docker build -t zapgate .
#   docker run -d --name zapgate -p 127.0.0.1:50051:50051 \
#     -v zapgate-data:/var/lib/zapgate \
#     --tmpfs /run/zapgate:rw,noexec,nosuid,size=256m,mode=1777 \
#     -e ZAPGATE_MASTER_KEY="$(cat master.key)" zapgate
#
# See docs/deploy.md (compose with PostgreSQL, Kubernetes) and docs/runbook.md.

# ---- build: install zapgate and its dependencies into a virtual environment -------------
FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/zapgate
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY gateway ./gateway
COPY sessions ./sessions
COPY ratelimit ./ratelimit
COPY clients/python/zapgate_client ./clients/python/zapgate_client
RUN /opt/zapgate/bin/pip install --no-cache-dir .

# ---- run -----------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm

# libmagic1: neonize (python-magic) detects media types with it.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libmagic1 \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 zapgate \
 && useradd --system --uid 10001 --gid zapgate --home-dir /var/lib/zapgate \
      --shell /usr/sbin/nologin zapgate \
 && mkdir -p /var/lib/zapgate /run/zapgate \
 && chown zapgate:zapgate /var/lib/zapgate /run/zapgate \
 && chmod 0700 /var/lib/zapgate /run/zapgate

COPY --from=build /opt/zapgate /opt/zapgate

# The data dir (SQLite store, generated master key, initial API key) is the volume. The
# runtime dir holds every session's plaintext store: mount a tmpfs on /run/zapgate (zapgate
# logs a loud warning at start when it is not memory-backed). zapgate makes the `sessions`
# directory inside it itself, 0700, so the mount's own owner and mode do not matter.
ENV PATH=/opt/zapgate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ZAPGATE_DATA_DIR=/var/lib/zapgate \
    ZAPGATE_RUNTIME_DIR=/run/zapgate/sessions

USER 10001:10001
WORKDIR /var/lib/zapgate
VOLUME ["/var/lib/zapgate"]
# gRPC; HTTP (Connect, gRPC-Web: docs/http.md); Prometheus metrics when started with
# --metrics-listen 0.0.0.0:9464.
EXPOSE 50051 8080 9464
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["zapgate", "health", "--server", "127.0.0.1:50051"]
ENTRYPOINT ["zapgate"]
CMD ["serve", "--listen", "0.0.0.0:50051", "--http-listen", "0.0.0.0:8080"]
