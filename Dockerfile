# The gcl image: the coordinator (`gcl serve`), the `gcl` command line and the examples.
# Configure it with GCL_* variables (see `gcl --help`); compose.yaml shows a full deployment.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GCL_DATA_DIR=/data

WORKDIR /app
COPY . /app
RUN pip install ./sdk ".[postgres]" \
    && useradd --create-home --uid 10001 gcl \
    && mkdir -p /data \
    && chown gcl /data

# Without GCL_DB_URL the coordinator keeps its SQLite file here.
VOLUME ["/data"]
USER gcl

# The coordinator listens on no port: it only talks to NATS (GCL_NATS_URL).
CMD ["gcl", "serve"]
