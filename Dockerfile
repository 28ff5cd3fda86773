# Qapten in a container: serves agents/org.yaml on port 8000; database, workspaces on /data.
#
#   docker build -t qapten .
#   docker run --rm -p 8000:8000 -v qapten-data:/data \
#     -e QAPTEN_ADMIN_TOKEN=CHOOSE-A-LONG-RANDOM-TOKEN \
#     -e QAPTEN_MODEL=openai:gpt-4o-mini -e OPENAI_API_KEY \
#     qapten
#
# Inside the container the server listens on 0.0.0.0, so it refuses to start without a token:
# pass QAPTEN_ADMIN_TOKEN, or tokens in a settings file (-e QAPTEN_SETTINGS=/data/settings.yaml;
# `qapten token` prints entries). QAPTEN_MODEL (and QAPTEN_BASE_URL for an OpenAI-compatible
# server) chooses the model. Other commands: docker run --rm qapten validate agents/org.yaml
# Several replicas and workers on PostgreSQL: docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# agents/ is built into the wheel too (the default org of `qapten demo`).
COPY pyproject.toml README.md ./
COPY qapten ./qapten
COPY agents ./agents
# mcp: tools from MCP servers named in the chart. postgres: --db postgresql://..., `serve
# --workers` and `qapten worker` (docker-compose.yml). chat: Slack and Telegram channels. The
# embedded model (extra "local") is left out: it compiles llama.cpp and needs build tools; a
# container talks to a model server instead.
ARG EXTRAS=mcp,postgres,chat
RUN pip install ".[${EXTRAS}]"

COPY examples ./examples

# /data is made and owned by the unprivileged user before VOLUME, so a new volume inherits that.
RUN useradd --create-home --uid 10001 qapten && mkdir /data && chown qapten:qapten /data
USER qapten
VOLUME /data
EXPOSE 8000

HEALTHCHECK CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/api/v1/healthz', timeout=3)"]
ENTRYPOINT ["qapten"]
CMD ["serve", "agents/org.yaml", "--host", "0.0.0.0", "--port", "8000", "--data-dir", "/data"]
