# Blixt devnet in a container.
#   docker build -t blixt .
#   docker run --rm -p 127.0.0.1:8545:8545 -v blixt-data:/data blixt
#   docker run --rm -p 127.0.0.1:8545:8545 blixt --instant        # extra args go to `blixt devnet`
#   docker run --rm --network host --entrypoint blixt blixt stress --rpc http://127.0.0.1:8545
# With Prometheus and Grafana: docker compose -f configs/compose.yaml up --build

# ---- build: compile what has no wheel for this platform, install into a venv ----
FROM python:3.11-slim-bookworm AS build

# Compilers and LevelDB headers only for this stage: plyvel, safe-pysha3 and
# friends build from source where no wheel fits. Versions come from the pinned
# Debian release of the base image, so apt versions are not pinned again here.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential libleveldb-dev \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/blixt/bin:$PATH
RUN python -m venv /opt/blixt

WORKDIR /src
# Metadata first, packages after: edits to the code keep the layers above cached.
COPY pyproject.toml README.md ./
COPY node ./node
COPY sequencer ./sequencer
COPY precompiles ./precompiles
COPY exchange ./exchange
COPY configs/devnet.toml ./configs/devnet.toml
RUN pip install --no-cache-dir . \
    && cp -r configs /opt/blixt/configs

# ---- runtime: the venv, the LevelDB shared library, an unprivileged user ----
FROM python:3.11-slim-bookworm

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libleveldb1d \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 blixt \
    && useradd --system --uid 10001 --gid blixt --home-dir /data --shell /usr/sbin/nologin blixt \
    && mkdir -p /data \
    && chown blixt:blixt /data

COPY --from=build /opt/blixt /opt/blixt
ENV PATH=/opt/blixt/bin:$PATH \
    PYTHONUNBUFFERED=1

# Numeric, so the host and Kubernetes' runAsNonRoot can verify it is not root.
USER 10001:10001
WORKDIR /data
# Chain data (LevelDB): keep it on a volume so the chain survives the container.
VOLUME ["/data"]
# JSON-RPC over HTTP and WebSocket, and Prometheus /metrics, on one port.
EXPOSE 8545

# slim has no curl: ask the node for eth_blockNumber with the interpreter it already has.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import json, sys, urllib.request as u; r = u.urlopen(u.Request('http://127.0.0.1:8545', b'{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"eth_blockNumber\",\"params\":[]}', {'Content-Type': 'application/json'}), timeout=2); sys.exit(0 if 'result' in json.load(r) else 1)"]

# 0.0.0.0 here is the container's own network interface, not the host's: Docker's
# port publishing decides what the host exposes (compose publishes to 127.0.0.1 only).
ENTRYPOINT ["blixt", "devnet", "--host", "0.0.0.0", "--port", "8545", "--data-dir", "/data"]
