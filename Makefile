# tripscore developer tasks. `make test` sets up everything on a fresh machine (Python 3.11, Java 17, Maven).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
TRIPSCORE := $(BIN)/tripscore
JARS_DIR := $(or $(TRIPSCORE_JARS_DIR),jars)
JVM_POMS := jvm/pom.xml jvm/kafka-broker/pom.xml jvm/spark-kafka/pom.xml
PYTEST_ARGS ?=

.PHONY: venv jars promtool kafka-up kafka-down topics lint test demo clean

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

kafka-up: venv jars
	$(TRIPSCORE) kafka up

kafka-down: venv
	$(TRIPSCORE) kafka down

topics: kafka-up
	$(TRIPSCORE) topics create

lint: venv
	$(BIN)/ruff check .

# The broker is stopped whatever pytest returns; pytest's exit code is make's (5, no tests ran, fails too).
test: venv jars promtool
	@status=0; \
	$(TRIPSCORE) kafka up && $(TRIPSCORE) topics create && $(BIN)/pytest $(PYTEST_ARGS) || status=$$?; \
	$(TRIPSCORE) kafka down || true; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; fi; \
	exit $$status

# The whole pipeline end to end on the embedded defaults; the demo starts and stops the broker itself.
demo: venv jars
	$(TRIPSCORE) demo

clean:
	if [ -x $(TRIPSCORE) ]; then $(TRIPSCORE) kafka down; fi
	rm -rf $(JARS_DIR) jvm/target jvm/*/target .local/kafka .local/spark .pytest_cache .ruff_cache
