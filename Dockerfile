# Qapten in a container. Build: docker build -t qapten .   Run: docker run --rm qapten --help
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

# Dependencies first, so that code changes do not reinstall them.
COPY pyproject.toml README.md ./
COPY qapten ./qapten
RUN pip install .

COPY agents ./agents
COPY examples ./examples

RUN useradd --create-home qapten
USER qapten

ENTRYPOINT ["qapten"]
CMD ["--help"]
