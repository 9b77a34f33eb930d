# durable-proxy: the proxy (`durable-proxy serve`, the default command) and, with the same image,
# the example services (`uvicorn examples.order_service:app ...`). docker-compose.yml runs both.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# What the package build needs first, so that the install layer is reused while only the examples change.
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY handler_sdk ./handler_sdk
RUN pip install '.[speedups,postgres]' 'fastapi>=0.110'

# The example services, imported from the working directory by uvicorn.
COPY examples ./examples

# Run as an unprivileged user. /data is where the default SQLite journal and the example
# services' files go; mount a volume there to keep them.
RUN useradd --create-home --uid 10001 durable \
    && mkdir /data \
    && chown durable:durable /data
USER durable

# Listen on every interface of the container. The admin API stays on loopback unless
# DURABLE_PROXY_ADMIN_HOST and DURABLE_PROXY_ADMIN_TOKEN are set.
ENV DURABLE_PROXY_HOST=0.0.0.0 \
    DURABLE_PROXY_DB=/data/durable-proxy.db

# ingress, admin API, callbacks
EXPOSE 8080 9070 9071

CMD ["durable-proxy", "serve"]
