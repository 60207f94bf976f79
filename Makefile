# Loopwise developer commands. `make test` and `make demo` work on a fresh clone:
# they install uv (from PyPI), the Python packages and the Kafka jars (from Maven Central).
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
KAFKA := bash deploy/local/kafka.sh
KAFKA_PORT ?= 9092
export KAFKA_PORT
PACKAGES := loopwise $(shell ls -d services/*/src/loopwise_* 2>/dev/null | xargs -n1 basename)

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

.PHONY: uv
uv: ## install uv from PyPI if it is missing
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv

.PHONY: install
install: uv ## install every workspace package and dev tool into .venv, fetch the Kafka jars
	$(UV) sync --all-packages
	$(KAFKA) fetch

.PHONY: lint
lint: install ## ruff (lint + format check) and mypy --strict
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy $(addprefix -p ,$(PACKAGES))
	$(UV) run mypy tests deploy/local/demo.py

.PHONY: pytest
pytest: install deploy-tools ## run every test (starts a local broker unless KAFKA_BOOTSTRAP_SERVERS is set)
	$(UV) run pytest

.PHONY: test
test: lint pytest ## install everything, then lint, type-check and run every test

.PHONY: fmt
fmt: install ## format and auto-fix
	$(UV) run ruff format .
	$(UV) run ruff check --fix .

.PHONY: schemas
schemas: install ## regenerate shared/schemas and docs/events.md from the models
	$(UV) run loopwise schemas shared/schemas
	$(UV) run loopwise docs events --out docs/events.md

.PHONY: kafka-up
kafka-up: ## start the local KRaft broker on 127.0.0.1:$(KAFKA_PORT)
	$(KAFKA) up

.PHONY: kafka-down
kafka-down: ## stop the local broker
	$(KAFKA) down

.PHONY: pg-up
pg-up: ## start a throw-away PostgreSQL (for the audit writer's PostgreSQL tests)
	bash deploy/local/postgres.sh up

.PHONY: pg-down
pg-down: ## stop it and delete its data
	bash deploy/local/postgres.sh down

.PHONY: demo-down
demo-down: ## stop the review console the demo left up, and the local broker
	@if [ -f var/console.pid ]; then kill "$$(cat var/console.pid)" 2>/dev/null || true; rm -f var/console.pid; fi
	$(KAFKA) down

.PHONY: install-chromium
install-chromium: ## Debian's chromium for the review console's browser test (apt-get, if missing)
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >&2; } || \
	  echo "chromium not installed: the console's browser test will be skipped" >&2

.PHONY: demo
demo: install kafka-up ## run the whole pipeline on the local broker: three calls, reviewer, audit
	KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$(KAFKA_PORT) $(UV) run python deploy/local/demo.py

# ---- deploy: images, compose, Helm chart, dashboard and alerts (docs/deploy.md) ----------
TOOLS_BIN ?= $(HOME)/.cache/loopwise/bin
HELM_VERSION ?= v3.22.0
PROMETHEUS_VERSION ?= v0.316.0
# tests/deploy fail instead of skipping when helm or promtool is missing.
export LOOPWISE_DEPLOY_TOOLS ?= required
export LOOPWISE_TOOLS_BIN := $(TOOLS_BIN)

.PHONY: deploy-tools
deploy-tools: ## build helm and promtool from the Go module proxy into ~/.cache/loopwise/bin (once)
	@test -x $(TOOLS_BIN)/helm || { echo "building helm $(HELM_VERSION) (once, a few minutes)"; \
	  GOBIN=$(TOOLS_BIN) go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION); }
	@test -x $(TOOLS_BIN)/promtool || { echo "building promtool $(PROMETHEUS_VERSION) (once, a few minutes)"; \
	  GOBIN=$(TOOLS_BIN) go install github.com/prometheus/prometheus/cmd/promtool@$(PROMETHEUS_VERSION); }

.PHONY: deploy-check
deploy-check: install deploy-tools ## only the deploy checks: chart, compose, alerts, dashboard, SASL_SSL, live metrics
	$(UV) run pytest tests/deploy

.PHONY: chaos-long
chaos-long: install ## the long chaos run: 3 runs of 400 calls (each service SIGKILLed, the broker restarted, SIGKILL in run 2), then 1 with two instances paused past the session timeout
	$(UV) run python -m tests.chaos.harness --runs 3 --calls 400

.PHONY: images
images: ## build every service image with a Docker engine (PYTHON_IMAGE=... to change the base)
	bash deploy/compose/local.sh images

.PHONY: compose-up-local
compose-up-local: ## without a registry: Debian base by debootstrap, images, then docker compose up
	bash deploy/compose/local.sh up

.PHONY: compose-down-local
compose-down-local: ## stop what compose-up-local started
	bash deploy/compose/local.sh down
