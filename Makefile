# tripscore developer tasks. `make test` sets up everything on a fresh machine (Python 3.11, Java 17, Maven).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
TRIPSCORE := $(BIN)/tripscore
JARS_DIR := $(or $(TRIPSCORE_JARS_DIR),jars)
JVM_POMS := jvm/pom.xml jvm/kafka-broker/pom.xml jvm/spark-kafka/pom.xml
PYTEST_ARGS ?=
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= tripscore:$(VERSION)
BASE_IMAGE := docker.io/library/$(shell awk '/^FROM / {print $$2; exit}' Dockerfile)
PODMAN_PACKAGES := podman buildah mmdebstrap runc
IMAGE_LOGS := .local/image
# podman's settings for this machine, written by `make podman`; the image tests read the same file
export CONTAINERS_CONF := $(abspath .local/containers/containers.conf)

.PHONY: venv jars promtool ajv kafka-up kafka-down topics lint test fuzz demo clean podman base-image image test-image

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# Kafka broker and Spark's Kafka connector from Maven Central into jars/kafka and jars/spark.
jars: $(JARS_DIR)/.copied

$(JARS_DIR)/.copied: $(JVM_POMS)
	rm -rf $(JARS_DIR)/kafka $(JARS_DIR)/spark
	mvn --batch-mode --quiet -Dstyle.color=never -f jvm/pom.xml -Djars.dir=$(abspath $(JARS_DIR)) package
	touch $@

# promtool for the tests of deploy/prometheus: the system's, or unpacked from Debian's `prometheus` package into
# .venv/bin (nothing is installed system-wide, no service starts). Without apt the promtool tests skip.
promtool: $(BIN)/promtool

$(BIN)/promtool: | venv
	@if command -v promtool >/dev/null; then ln -sf "$$(command -v promtool)" $@; else \
	  tmp=$$(mktemp -d); \
	  ( cd $$tmp && { apt-get download prometheus || { apt-get update && apt-get download prometheus; }; } \
	    && dpkg-deb -x prometheus_*.deb root && cp root/usr/bin/promtool $(abspath $@) ) >/dev/null 2>&1 \
	    || echo "promtool not available (no apt?): its tests will skip"; \
	  rm -rf $$tmp; \
	fi

# podman for `make image` and the image tests: Debian's podman, buildah, mmdebstrap and runc when one is missing
# (as root, with apt-get), and $(CONTAINERS_CONF) for this machine: runc (Debian's crun 1.8 refuses hosts with
# cgroup v1 and v2 controllers at once) and container limits no higher than this host allows.
podman:
	@if ! command -v podman >/dev/null || ! command -v mmdebstrap >/dev/null || ! command -v runc >/dev/null; then \
	  if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	    echo "podman, mmdebstrap or runc missing, and no apt-get as root to install them" >&2; exit 1; fi; \
	  install="apt-get install -y -q --no-install-recommends $(PODMAN_PACKAGES)"; \
	  DEBIAN_FRONTEND=noninteractive $$install >/dev/null 2>&1 \
	    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $$install >/dev/null; } || exit 1; \
	fi
	@mkdir -p $(dir $(CONTAINERS_CONF)); \
	nofile=$$(awk '/^Max open files/ {print $$5}' /proc/self/limits); \
	nproc=$$(awk '/^Max processes/ {print $$4}' /proc/self/limits); pid_max=$$(cat /proc/sys/kernel/pid_max); \
	if [ "$$nproc" = unlimited ] || [ "$$nproc" -gt "$$pid_max" ]; then nproc=$$pid_max; fi; \
	[ "$$nofile" = unlimited ] && nofile=1048576; \
	printf '# Written by `make podman` for this machine.\n[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=%s:%s"]\n[engine]\nruntime = "runc"\n' \
	  $$nofile $$nofile $$nproc $$nproc > $(CONTAINERS_CONF)

# The Dockerfile's base image: pulled, or, where the registry cannot be reached, made here with mmdebstrap from
# Debian's bookworm archive (minbase without documentation, man pages and translations, as the official slim image)
# and imported under the same name, so that the same Dockerfile builds unchanged with Docker elsewhere.
base-image: podman
	@podman image exists $(BASE_IMAGE) || timeout 120 podman pull -q $(BASE_IMAGE) >/dev/null 2>&1 || { \
	  echo "$(BASE_IMAGE) cannot be pulled: making it with mmdebstrap (log in $(IMAGE_LOGS)/base.log)"; \
	  mkdir -p $(IMAGE_LOGS); \
	  mmdebstrap --variant=minbase --format=tar --aptopt='Acquire::Languages "none"' \
	    --dpkgopt=force-unsafe-io --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
	    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
	    --dpkgopt='path-include=/usr/share/doc/*/copyright' bookworm - \
	    'deb http://deb.debian.org/debian bookworm main' 'deb http://deb.debian.org/debian bookworm-updates main' \
	    'deb http://deb.debian.org/debian-security bookworm-security main' 2>$(IMAGE_LOGS)/base.log \
	  | podman import -q --change 'CMD ["bash"]' - $(BASE_IMAGE) >/dev/null \
	  || { tail -20 $(IMAGE_LOGS)/base.log >&2; exit 1; }; }

# The image, with podman; its layers stay in podman's store, so a build after a change of the code redoes only the
# last ones. A host whose pip trusts its own CA (PIP_CERT, or pip's `global.cert`: a proxy's) lends it to the
# build's pip as a secret.
image: jars base-image
	@mkdir -p $(IMAGE_LOGS); start=$$(date +%s); \
	ca=$${PIP_CERT:-$$($(PYTHON) -m pip config get global.cert 2>/dev/null)}; \
	podman build --format docker $${ca:+--secret id=pip-ca,src=$$ca} -t $(IMAGE) . >$(IMAGE_LOGS)/build.log 2>&1 \
	  || { tail -40 $(IMAGE_LOGS)/build.log >&2; echo "make image: podman build failed (log: $(IMAGE_LOGS)/build.log)" >&2; exit 1; }; \
	echo "$(IMAGE) built in $$(( $$(date +%s) - start )) s: $$(podman image inspect --format '{{.Size}}' $(IMAGE) | awk '{printf "%.0f MB", $$1 / 1e6}') (log: $(IMAGE_LOGS)/build.log)"

# `make test` builds the image where podman is installed or can be installed; the image tests skip otherwise.
test-image:
	@if $(MAKE) -s podman; then $(MAKE) -s image; else echo "no podman: the image tests will skip" >&2; fi

# ajv, the JavaScript JSON Schema validator of the schema parity test, pinned by tests/package-lock.json, where node
# and npm exist (into tests/node_modules); without them that part of the test skips and says why.
ajv: tests/node_modules/.package-lock.json

tests/node_modules/.package-lock.json: tests/package.json tests/package-lock.json
	@if command -v node >/dev/null && command -v npm >/dev/null; then \
	  npm ci --prefix tests --no-audit --no-fund --loglevel=error; \
	else echo "node or npm not found: the ajv part of tests/test_schema_parity.py will skip"; fi

kafka-up: venv jars
	$(TRIPSCORE) kafka up

kafka-down: venv
	$(TRIPSCORE) kafka down

topics: kafka-up
	$(TRIPSCORE) topics create

lint: venv
	$(BIN)/ruff check .

# The broker is stopped whatever pytest returns; pytest's exit code is make's (5, no tests ran, fails too).
# CI set: property tests run the derandomized `ci` profile of tests/conftest.py, the same examples every run.
test: venv jars promtool ajv test-image
	@status=0; \
	$(TRIPSCORE) kafka up && $(TRIPSCORE) topics create && CI=$${CI:-1} $(BIN)/pytest $(PYTEST_ARGS) || status=$$?; \
	$(TRIPSCORE) kafka down || true; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; fi; \
	exit $$status

# Exploration, not part of `make test`: the property tests (pytest's `hypothesis` marker) with random seeds and 10x
# the examples. Each failure it finds becomes an @example of its test, so `make test` replays it from then on.
fuzz: venv
	$(BIN)/pytest -m hypothesis --hypothesis-profile=fuzz $(PYTEST_ARGS)

# The whole pipeline end to end on the embedded defaults; the demo starts and stops the broker itself.
demo: venv jars
	$(TRIPSCORE) demo

clean:
	if [ -x $(TRIPSCORE) ]; then $(TRIPSCORE) kafka down; fi
	rm -rf $(JARS_DIR) jvm/target jvm/*/target .local/kafka .local/spark .pytest_cache .ruff_cache tests/node_modules
