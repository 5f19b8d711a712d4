# Multi-stage image: `docker build --target train .` runs the pipeline; `--target serve` serves its export.
#   docker build --target serve -t keras-pipeline-serve .
#   docker run --rm -p 8501:8501 keras-pipeline-serve
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DVC_NO_ANALYTICS=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline/ pipeline/
RUN pip install --no-cache-dir .

# Runs the whole pipeline at build time (the built-in data ships inside the installed packages).
FROM base AS train
# git: DVC tracks the pipeline in a git repository. Debian's package versions change under a
# fixed tag, so they are not pinned here.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git make \
    && rm -rf /var/lib/apt/lists/*
COPY .dvc/config .dvc/.gitignore .dvc/
COPY dvc.yaml params.yaml Makefile ./
COPY expectations/ expectations/
COPY data/user/ data/user/
RUN git init -q \
    && git config user.email "docker@localhost" \
    && git config user.name "docker" \
    && git add -A \
    && git commit -qm "pipeline" \
    && dvc repro
CMD ["dvc", "repro"]

# Serves the exported SavedModel with the TF Serving-compatible API, as a non-root user.
FROM base AS serve
RUN useradd --create-home --uid 10001 serving
COPY --from=train --chown=10001:10001 /app/models/serving /models/serving
USER 10001
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/health', timeout=4)"]
CMD ["pipeline", "serve", "--model", "/models/serving", "--host", "0.0.0.0", "--port", "8501"]
