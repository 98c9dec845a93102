"""The one place where settings become each Kafka client's own options: kafka-python, aiokafka (and Faust), Spark.

Every producer, consumer and admin client of tripscore takes its connection options from here, so a connection
setting (bootstrap servers, TLS, SASL) is added once and reaches every client.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from runtime.config import Settings

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}
DURABILITY: dict[str, Any] = {"acks": "all", "enable_idempotence": True}
"""Every producer of tripscore: acknowledged by all in-sync replicas, and idempotent (a retried send lands once)."""
RECONNECT_BACKOFF_MAX_MS = 1000
"""kafka-python's clients back off up to 30 s between attempts to reach a broker that is down, so they found a
returned broker 14-20 s late here; 1 s is the Java client's default."""


class KafkaAccessError(RuntimeError):
    """Kafka cannot be used as configured (inconsistent security settings, authentication or TLS refused).

    Its message is one line meant for the user, and never holds a password or a key path.
    """


def bootstrap_list(settings: Settings) -> list[str]:
    """The `host:port` entries of `TRIPSCORE_KAFKA_BOOTSTRAP`."""
    return [server.strip() for server in settings.kafka_bootstrap.split(",") if server.strip()]


def host_port(server: str) -> tuple[str, int]:
    """Host and port of one `host:port` bootstrap entry (an IPv6 host in brackets); ValueError when malformed."""
    host, _, port = server.rpartition(":")
    return host.strip("[]"), int(port)


def security_protocol(settings: Settings) -> str:
    """`TRIPSCORE_KAFKA_SECURITY_PROTOCOL`, checked together with the SASL and TLS settings it needs."""
    protocol = settings.kafka_security_protocol.upper()
    if protocol not in SECURITY_PROTOCOLS:
        raise KafkaAccessError(f"TRIPSCORE_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol!r}: "
                               f"expected one of {', '.join(SECURITY_PROTOCOLS)}")
    if uses_sasl(protocol):
        if settings.kafka_sasl_mechanism not in SASL_MECHANISMS:
            raise KafkaAccessError(f"TRIPSCORE_KAFKA_SASL_MECHANISM={settings.kafka_sasl_mechanism!r}: "
                                   f"expected one of {', '.join(SASL_MECHANISMS)}")
        if not (settings.kafka_sasl_username and settings.kafka_sasl_password):
            raise KafkaAccessError(f"security protocol {protocol} needs TRIPSCORE_KAFKA_SASL_USERNAME and "
                                   "TRIPSCORE_KAFKA_SASL_PASSWORD")
    if bool(settings.kafka_ssl_certfile) != bool(settings.kafka_ssl_keyfile):
        raise KafkaAccessError("a client certificate needs both TRIPSCORE_KAFKA_SSL_CERTFILE and "
                               "TRIPSCORE_KAFKA_SSL_KEYFILE")
    return protocol


def uses_tls(protocol: str) -> bool:
    """Whether the connection is encrypted (SSL, SASL_SSL)."""
    return protocol in ("SSL", "SASL_SSL")


def uses_sasl(protocol: str) -> bool:
    """Whether the client authenticates with a user name and password (SASL_PLAINTEXT, SASL_SSL)."""
    return protocol.startswith("SASL_")


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context of kafka-python, aiokafka and Faust: the broker's certificate and host name are checked
    against `TRIPSCORE_KAFKA_SSL_CAFILE` (else the system's CAs); a client certificate is presented when set."""
    try:
        context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)
    except (OSError, ssl.SSLError) as exc:
        raise KafkaAccessError(f"cannot load TRIPSCORE_KAFKA_SSL_CAFILE={settings.kafka_ssl_cafile}: "
                               f"{exc.strerror or exc}") from None
    if settings.kafka_ssl_certfile:
        try:
            context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise KafkaAccessError("cannot load the client certificate TRIPSCORE_KAFKA_SSL_CERTFILE / _KEYFILE: "
                                   f"{reason}") from None
    return context


def _python_client_options(settings: Settings) -> dict[str, Any]:
    """Options kafka-python and aiokafka name alike: bootstrap servers, protocol, TLS context, SASL login."""
    protocol = security_protocol(settings)
    options: dict[str, Any] = {"bootstrap_servers": bootstrap_list(settings), "security_protocol": protocol}
    if uses_tls(protocol):
        options["ssl_context"] = ssl_context(settings)
    if uses_sasl(protocol):
        options.update(sasl_mechanism=settings.kafka_sasl_mechanism, sasl_plain_username=settings.kafka_sasl_username,
                       sasl_plain_password=settings.kafka_sasl_password)
    return options


def kafka_python_options(settings: Settings) -> dict[str, Any]:
    """Connection options for kafka-python's `KafkaProducer`, `KafkaConsumer` and `KafkaAdminClient`."""
    return {**_python_client_options(settings), "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS}


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Connection options for aiokafka's `AIOKafkaProducer` and `AIOKafkaConsumer`."""
    return _python_client_options(settings)


def producer_options(settings: Settings) -> dict[str, Any]:
    """Options of a kafka-python `KafkaProducer`: the connection and `DURABILITY`."""
    return {**kafka_python_options(settings), **DURABILITY}


def aiokafka_producer_options(settings: Settings) -> dict[str, Any]:
    """Options of an aiokafka `AIOKafkaProducer`: the connection and `DURABILITY`."""
    return {**aiokafka_options(settings), **DURABILITY}


def faust_options(settings: Settings) -> dict[str, Any]:
    """Connection options for `faust.App` (its aiokafka transport); its producer's acks follow `DURABILITY`
    (idempotence is its transport's, `scorer.transport`)."""
    import faust

    protocol = security_protocol(settings)
    options: dict[str, Any] = {"broker": [f"kafka://{server}" for server in bootstrap_list(settings)],
                               "producer_acks": DURABILITY["acks"]}
    context = ssl_context(settings) if uses_tls(protocol) else None
    if uses_sasl(protocol):
        options["broker_credentials"] = faust.SASLCredentials(
            username=settings.kafka_sasl_username, password=settings.kafka_sasl_password, ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism)
    elif context is not None:
        options["broker_credentials"] = faust.SSLCredentials(context)
    return options


def check_access(settings: Settings, timeout_s: float = 10.0) -> None:
    """Log in to the first bootstrap server that answers, as every client will; `KafkaAccessError` at once when its
    certificate is not trusted or it refuses the login. An unreachable broker is no error here: clients wait for it.

    aiokafka reports a refused login as such; kafka-python only sees the connection drop and retries until its
    timeout, so commands call this before they start their clients."""
    from aiokafka.conn import create_conn
    from aiokafka.errors import KafkaConnectionError, KafkaError

    options = aiokafka_options(settings)
    servers = options.pop("bootstrap_servers")

    async def log_in(host: str, port: int) -> None:
        conn = await asyncio.wait_for(create_conn(host, port, request_timeout_ms=int(timeout_s * 1000), **options),
                                      timeout_s)
        conn.close()

    for server in servers:
        try:
            asyncio.run(log_in(*host_port(server)))
            return
        except ssl.SSLCertVerificationError as exc:
            raise KafkaAccessError(f"the Kafka broker at {server} presented a certificate that is not trusted "
                                   f"({exc.verify_message}): check TRIPSCORE_KAFKA_SSL_CAFILE") from None
        except ssl.SSLError as exc:
            raise KafkaAccessError(f"TLS handshake with the Kafka broker at {server} failed ({exc.reason}): check "
                                   "TRIPSCORE_KAFKA_SECURITY_PROTOCOL and the TLS settings") from None
        except (TimeoutError, KafkaConnectionError, OSError, ValueError):
            continue
        except KafkaError as exc:
            raise KafkaAccessError(f"the Kafka broker at {server} refused the {options.get('sasl_mechanism', '')} "
                                   f"login of user {settings.kafka_sasl_username!r} ({exc}): check "
                                   "TRIPSCORE_KAFKA_SASL_USERNAME and TRIPSCORE_KAFKA_SASL_PASSWORD") from None


def jaas_config(settings: Settings) -> str:
    """The JAAS login line of Java clients (Spark's connector, the local broker's own) for the SASL user."""
    return (f"{LOGIN_MODULES[settings.kafka_sasl_mechanism]} required "
            f"username={_jaas_quoted(settings.kafka_sasl_username)} "
            f"password={_jaas_quoted(settings.kafka_sasl_password)};")


def _jaas_quoted(value: str) -> str:
    """A JAAS option value in double quotes, its backslashes and quotes escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def spark_kafka_options(settings: Settings) -> dict[str, str]:
    """`kafka.`-prefixed options for Spark's Kafka source and sink: certificates as PEM, SASL as a JAAS line."""
    protocol = security_protocol(settings)
    options = {"kafka.bootstrap.servers": ",".join(bootstrap_list(settings)), "kafka.security.protocol": protocol}
    if uses_tls(protocol) and settings.kafka_ssl_cafile:
        options.update({"kafka.ssl.truststore.type": "PEM", "kafka.ssl.truststore.location": settings.kafka_ssl_cafile})
    if uses_tls(protocol) and settings.kafka_ssl_certfile:
        options.update({"kafka.ssl.keystore.type": "PEM",
                        "kafka.ssl.keystore.certificate.chain": _read_pem(settings.kafka_ssl_certfile),
                        "kafka.ssl.keystore.key": _read_pem(settings.kafka_ssl_keyfile)})
    if uses_sasl(protocol):
        options.update({"kafka.sasl.mechanism": settings.kafka_sasl_mechanism,
                        "kafka.sasl.jaas.config": jaas_config(settings)})
    return options


def _read_pem(path: str) -> str:
    """A client certificate or key file's text; the error names the setting, not the path."""
    try:
        with open(path) as pem:
            return pem.read()
    except OSError as exc:
        raise KafkaAccessError("cannot read the client certificate TRIPSCORE_KAFKA_SSL_CERTFILE / _KEYFILE: "
                               f"{exc.strerror}") from None
