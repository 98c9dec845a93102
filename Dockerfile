# tripscore's image: one image for `tripscore score`, `stream`, `retrain`, `backfill` and the other commands.
#   make image                      # with podman (README "Going to production"); or, after `make jars`:
#   docker build -t tripscore:0.1.0 .
# Python 3.11 and Java 17 come from Debian 12 (bookworm); the dependencies are a virtual environment in
# /opt/tripscore/venv, with the project installed into it as a wheel built in a stage of its own; Spark's Kafka
# connector (`make jars`) is in /opt/tripscore/jars/spark. The user is tripscore (uid 10001), never root.

FROM debian:bookworm-slim AS system
# man1 is missing in the slim image, and the JRE's post-install step links a man page into it. Versions are not
# pinned: bookworm's archive keeps only the current one (a pin breaks the build at the next security update).
# hadolint ignore=DL3008
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv openjdk-17-jre-headless ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/tripscore/venv
ENV PATH=/opt/tripscore/venv/bin:$PATH PIP_DISABLE_PIP_VERSION_CHECK=1

# The run-time dependencies of pyproject.toml, as a file that changes only when they do.
FROM system AS requirements
COPY pyproject.toml /tmp/
RUN python3 -c 'import tomllib; print(*tomllib.load(open("/tmp/pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")' \
    > /tmp/requirements.txt

# The dependencies before the code, so that a change of the code does not fetch them again. A build host whose
# HTTPS goes through a proxy with its own CA passes that CA as the secret `pip-ca` (`make image` does).
FROM system AS runtime
COPY --from=requirements /tmp/requirements.txt /tmp/
RUN --mount=type=cache,target=/root/.cache/pip --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && pip install -r /tmp/requirements.txt

FROM runtime AS wheel
WORKDIR /src
COPY . ./
RUN --mount=type=cache,target=/root/.cache/pip --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && pip wheel --no-deps --wheel-dir /dist .

FROM runtime
RUN useradd --uid 10001 --user-group --home-dir /var/lib/tripscore --create-home --shell /usr/sbin/nologin tripscore
COPY jars/spark /opt/tripscore/jars/spark
COPY deploy/image/tripscore-health deploy/image/spark-executor /usr/local/bin/
# the project last, on top of its dependencies: a change of the code rebuilds only these small layers (the wheel is
# copied, not bind-mounted from its stage: buildah would reuse the cached install after a change of the code)
COPY --from=wheel /dist/ /tmp/dist/
RUN pip install --no-deps --no-cache-dir /tmp/dist/tripscore-*.whl && rm -r /tmp/dist
ENV PYTHONUNBUFFERED=1 \
    SPARK_HOME=/opt/tripscore/venv/lib/python3.11/site-packages/pyspark \
    TRIPSCORE_HOME=/var/lib/tripscore \
    TRIPSCORE_MODELS_DIR=/var/lib/tripscore/models \
    TRIPSCORE_DATASETS_DIR=/var/lib/tripscore/datasets \
    TRIPSCORE_JARS_DIR=/opt/tripscore/jars
USER 10001:10001
WORKDIR /var/lib/tripscore
EXPOSE 6066 9108
# the scorer's /health: 200 with a model loaded and the store answering (the stream: `tripscore-health --port 9108`)
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 CMD ["tripscore-health"]
ENTRYPOINT ["tripscore"]
CMD ["score"]
