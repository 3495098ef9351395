# ocrserve: one image for `ocrserve serve` (the default command) and `ocrserve worker`.
#
#   docker build -t ocrserve .           python:3.11-slim, from a registry
#   make image                           the same file on a Debian bookworm base made from Debian's
#                                        mirror (deploy/image-build.sh): no registry needed
#   docker run -p 127.0.0.1:8000:8000 -v ocrserve-data:/data ocrserve
#   docker run -v ocrserve-data:/data -e OCRSERVE_BROKER_URL=... -e OCRSERVE_DATABASE_URL=... \
#       --no-healthcheck ocrserve ocrserve worker
#
# The models are the ONNX files inside the rapidocr wheel, checked at build time: nothing is
# downloaded when a container starts.

ARG BASE=python:3.11-slim

# The interpreter both stages share, at the same path (the venv links to it). python:3.11-slim
# has one; a bare Debian bookworm base gets Debian's python3, which is 3.11 there.
FROM ${BASE} AS python
RUN if ! command -v python3 >/dev/null 2>&1; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            python3 ca-certificates \
        && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb; \
    fi \
    && python3 -c 'import sys; assert sys.version_info >= (3, 11), sys.version'


FROM python AS build
RUN if ! python3 -m ensurepip --version >/dev/null 2>&1; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv \
        && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb; \
    fi \
    && python3 -m venv /opt/venv

# pip reaches its index as the builder's pip does: these arguments, and the CA bundle given as
# the secret `pip_cert` (an index behind a TLS-inspecting proxy), reach this stage only; the
# runtime stage and the image's history never see them.
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_EXTRA_INDEX_URL=
ARG PIP_TRUSTED_HOST=
# Optional dependency groups of pyproject.toml to install too, comma-separated (a name the
# project does not define is skipped): the worker's dependencies belong in the image.
ARG EXTRAS=distributed
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
# The dependencies first, from pyproject.toml alone: editing the code does not fetch them again.
COPY pyproject.toml ./
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && python3 -c 'import os, tomllib; \
project = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
groups = project.get("optional-dependencies", {}); \
extras = [d for e in os.environ["EXTRAS"].split(",") for d in groups.get(e.strip(), [])]; \
print("\n".join(project["dependencies"] + extras))' > requirements.txt \
    && /opt/venv/bin/pip install --requirement requirements.txt

COPY README.md LICENSE ./
COPY src ./src
# Then the package, and out of the venv what production never runs: pip itself, tests, the ONNX
# backend's test data. Bytecode last, never checked against the sources' times: the runtime
# user cannot write it, and a copied file's time must not make every start compile again.
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && /opt/venv/bin/pip install --no-deps . \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/pip uninstall --yes --quiet pip setuptools wheel \
    && find /opt/venv/lib -type d -name tests -prune -exec rm -rf {} + \
    && rm -rf /opt/venv/lib/python3*/site-packages/onnx/backend/test \
    && find /opt/venv/lib -type d -name __pycache__ -prune -exec rm -rf {} + \
    && python3 -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/venv/lib


FROM python AS runtime
ARG VERSION=unknown
LABEL org.opencontainers.image.title="ocrserve" \
      org.opencontainers.image.description="Self-hosted OCR service: PP-OCR models on ONNX Runtime" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# A user of its own, numeric in USER so that Kubernetes' runAsNonRoot can check it. /data holds
# the task database and the webhook secret: the server keeps it 0700, its owner's alone. The home
# folder takes what libraries cache there (onnxruntime's ~/.cache), in the container, not /data.
RUN groupadd --gid 10001 ocrserve \
    && useradd --uid 10001 --gid ocrserve --create-home --no-log-init \
        --shell /usr/sbin/nologin ocrserve \
    && mkdir -m 0700 /data \
    && chown ocrserve:ocrserve /data

# Tesseract, the second engine (engine/tesseract.py): the languages PP-OCR does not read, and
# the fallback when PP-OCR fails. Debian's packs; add one as tesseract-ocr-<lang>
# (`apt-cache search tesseract-ocr-`), e.g. tesseract-ocr-ukr, tesseract-ocr-hin.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        tesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim tesseract-ocr-kor \
        tesseract-ocr-rus tesseract-ocr-ara \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb

COPY --from=build /opt/venv /opt/venv

# 0.0.0.0 inside the container only: the host decides what reaches it (-p 127.0.0.1:8000:8000).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    OCRSERVE_HOST=0.0.0.0 \
    OCRSERVE_PORT=8000 \
    OCRSERVE_DATA_DIR=/data
USER 10001:10001

# An image that builds is one whose models are there, match their SHA-256 and load. What that
# writes (onnxruntime writes ~/.cache/Microsoft and $TMPDIR/.ses) stays out of the image.
RUN export HOME=/tmp/models-check TMPDIR=/tmp/models-check OCRSERVE_DATA_DIR=/tmp/models-check \
    && mkdir -p /tmp/models-check \
    && ocrserve models \
    && rm -rf /tmp/models-check

WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:' + os.environ.get('OCRSERVE_PORT', '8000') + '/health', timeout=4)"]
# No shell in between (exec form): SIGTERM reaches the server, which drains within
# OCRSERVE_SHUTDOWN_TIMEOUT_S (25 s); give `docker stop` 30 s (--stop-timeout 30, compose's
# stop_grace_period), as Kubernetes does by default. A command replaces this one whole:
# `ocrserve worker`, `ocrserve models`, `python3 ...`.
STOPSIGNAL SIGTERM
CMD ["ocrserve", "serve"]
