# Set-up and everyday commands. `make run` and `make test` are the README's two commands:
# each installs what it needs first, so both work on a fresh machine.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
SAMPLE  ?= tests/fixtures/en_doc_paragraph.jpg
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' src/ocrserve/_version.py)
ENGINE  ?= podman
IMAGE   ?= ocrserve
BASE    ?= localhost/debian:bookworm

.PHONY: install system-deps browser-deps prometheus-deps gateway-deps run sample test test-slow lint bench bench-load bench-coldstart bench-reach image image-test

$(STAMP): pyproject.toml src/ocrserve/_version.py
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,serverless,distributed]"
	touch $(STAMP)

install: $(STAMP)

# Tesseract is the second engine (engine/tesseract.py: the languages PP-OCR does not read, and
# the fallback when PP-OCR fails) as well as a benchmark peer. Its language packs, and the Noto
# fonts tests/test_tesseract.py renders Korean, Cyrillic and Arabic lines with. apt runs again
# when any one of them is missing, not only the binary.
TESSERACT_PKGS := tesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim tesseract-ocr-chi-tra \
	tesseract-ocr-jpn tesseract-ocr-kor tesseract-ocr-rus tesseract-ocr-ukr tesseract-ocr-ara \
	tesseract-ocr-hin tesseract-ocr-tha tesseract-ocr-ell tesseract-ocr-heb \
	fonts-noto-core fonts-noto-cjk
system-deps:
	test "$$(dpkg-query -W -f='$${db:Status-Abbrev}\n' $(TESSERACT_PKGS) 2>/dev/null | \
		grep -c '^ii')" -eq $(words $(TESSERACT_PKGS)) || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(TESSERACT_PKGS))

# Chromium renders /docs and /redoc in a test: the API docs must work with no network. The page
# at / is driven in it by Playwright (tests/test_page.py), which needs nothing more: its Python
# package brings its driver, and it launches this chromium (no `playwright install`).
browser-deps:
	command -v chromium >/dev/null || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# tests/test_gateway.py runs deploy/nginx/nginx.conf in Debian's nginx, with a certificate made by
# openssl, and checks deploy/compose.yaml with docker-compose (Debian's v1: `config` needs no
# container engine). No recommends: they would bring a Docker engine.
gateway-deps:
	{ command -v nginx || test -x /usr/sbin/nginx; } >/dev/null && command -v openssl >/dev/null && \
		command -v docker-compose >/dev/null || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		nginx-light openssl docker-compose)

# promtool checks and unit-tests deploy/prometheus/alerts.yml (tests/test_observability.py).
# Only that binary is needed: it is taken out of Debian's prometheus package into the venv,
# so no Prometheus server is installed, let alone started.
prometheus-deps: $(STAMP)
	command -v promtool >/dev/null || test -x $(BIN)/promtool || { \
		tmp=$$(mktemp -d) && cd $$tmp && \
		{ apt-get download prometheus 2>/dev/null || \
			{ apt-get update -qq && apt-get download prometheus; }; } && \
		dpkg-deb -x prometheus_*.deb root && cp root/usr/bin/promtool $(abspath $(BIN))/ && \
		cd / && rm -rf $$tmp; }

run: $(STAMP)
	$(BIN)/ocrserve serve

sample: $(STAMP)
	$(BIN)/ocrserve ocr $(SAMPLE)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

# The soaks, kills and load runs (pytest -m slow: minutes); not part of `make test`.
test-slow: $(STAMP) system-deps
	$(BIN)/python -m pytest -q -m slow

test: $(STAMP) lint system-deps browser-deps gateway-deps prometheus-deps
	$(BIN)/python -m pytest -q

bench: $(STAMP) system-deps
	$(BIN)/python bench/engine.py --write-results

bench-load: $(STAMP)
	$(BIN)/python bench/load.py --write-results

bench-coldstart: $(STAMP) system-deps
	$(BIN)/python bench/coldstart.py --write-results

# Tesseract on the languages PP-OCR lacks (rendered with the Noto fonts), the fallback's cost,
# warm models, the compatibility routes and the rollout split: the reach section of RESULTS.md.
bench-reach: $(STAMP) system-deps
	$(BIN)/python bench/reach.py --write-results

# The container image, tagged $(IMAGE):$(VERSION) and :latest; not part of `make test` (minutes).
# The default base is Debian bookworm made from Debian's mirror when missing (no registry needed:
# root and debootstrap); BASE=python:3.11-slim is the Dockerfile's own default.
image:
	ENGINE=$(ENGINE) IMAGE=$(IMAGE) BASE=$(BASE) deploy/image-build.sh

# Runs the built image: /ready, a real /ocr, non-root, HEALTHCHECK, SIGTERM within 30 s, size.
# IMAGE_TEST_DATABASE_URL and IMAGE_TEST_BROKER_URL set: the worker variant too.
image-test:
	$(PY) deploy/image_test.py --engine $(ENGINE) --image $(IMAGE):$(VERSION)
