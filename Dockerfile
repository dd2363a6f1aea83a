# labbot GitHub App: webhook server + embedded SQLite job queue.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 labbot
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY bot ./bot
COPY pipeline ./pipeline
COPY schemas ./schemas
RUN pip install --no-cache-dir '.[bot]'
USER labbot
ENV LABBOT_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
CMD ["labbot", "serve", "--host", "0.0.0.0", "--port", "8000"]
