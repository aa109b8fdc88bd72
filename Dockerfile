# zapgate: `zapgate serve` as a non-root user, state on a volume.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ZAPGATE_DATA_DIR=/var/lib/zapgate

RUN groupadd --system --gid 10001 zapgate \
 && useradd --system --uid 10001 --gid zapgate --home-dir /var/lib/zapgate \
      --shell /usr/sbin/nologin zapgate \
 && mkdir -p /var/lib/zapgate \
 && chown zapgate:zapgate /var/lib/zapgate \
 && chmod 0700 /var/lib/zapgate

WORKDIR /opt/zapgate
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY gateway ./gateway
COPY sessions ./sessions
COPY ratelimit ./ratelimit
RUN pip install --no-cache-dir . && rm -rf /opt/zapgate/build

USER 10001:10001
VOLUME ["/var/lib/zapgate"]
EXPOSE 50051
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["zapgate", "health", "--server", "127.0.0.1:50051"]
ENTRYPOINT ["zapgate"]
CMD ["serve", "--listen", "0.0.0.0:50051"]
