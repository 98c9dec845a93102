"""The local broker's SASL_SSL listener (`tripscore kafka up --secure`), for tests and trying out a locked-down setup.

At every start OpenSSL makes a throwaway CA and a broker certificate for the loopback address; the SASL user is the
one the settings name (a SCRAM user is stored when the broker's storage is formatted). Clients then need
`TRIPSCORE_KAFKA_SECURITY_PROTOCOL=SASL_SSL`, that user and `TRIPSCORE_KAFKA_SSL_CAFILE=<home>/kafka/tls/ca.pem`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from runtime.config import Settings
from runtime.kafka_clients import jaas_config, security_protocol

LISTENER = "SASL_SSL"
CERT_DAYS = 7
NEW_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
UNQUOTABLE = set('"\\,[]=')
"""Characters a user name or password of the local broker may not hold: they would break its JAAS and SCRAM syntax."""


def check_settings(settings: Settings) -> None:
    """The settings a secured local broker needs: SASL_SSL with a user name and password; ValueError otherwise."""
    if security_protocol(settings) != LISTENER:
        raise ValueError("kafka up --secure serves SASL_SSL only: set TRIPSCORE_KAFKA_SECURITY_PROTOCOL=SASL_SSL, "
                         "TRIPSCORE_KAFKA_SASL_USERNAME and TRIPSCORE_KAFKA_SASL_PASSWORD (the user it creates)")
    if UNQUOTABLE & set(settings.kafka_sasl_username + settings.kafka_sasl_password):
        raise ValueError("the local broker's SASL user name and password must not contain any of " + "".join(
            sorted(UNQUOTABLE)))


def ca_file(root: Path) -> Path:
    """The CA certificate clients of the local broker trust (`TRIPSCORE_KAFKA_SSL_CAFILE`)."""
    return root / "tls" / "ca.pem"


def keystore_file(root: Path) -> Path:
    """The broker's key and certificate, one PEM file."""
    return root / "tls" / "broker.pem"


def _openssl(*args: str | Path) -> None:
    done = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"openssl {args[0]} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")


def make_certificates(root: Path, host: str) -> None:
    """A fresh CA and, signed by it, the broker's key and certificate for `host` and localhost. The CA's key is
    deleted: nothing else is ever signed with it."""
    folder = ca_file(root).parent
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    ca_key, broker_key, broker_cert = folder / "ca.key", folder / "broker.key", folder / "broker.crt"
    _openssl("req", "-x509", *NEW_KEY, "-keyout", ca_key, "-out", ca_file(root), "-days", str(CERT_DAYS),
             "-subj", "/CN=tripscore local CA")
    _openssl("req", "-x509", *NEW_KEY, "-keyout", broker_key, "-out", broker_cert, "-days", str(CERT_DAYS),
             "-subj", f"/CN={host}", "-CA", ca_file(root), "-CAkey", ca_key,
             "-addext", f"subjectAltName=IP:{host},DNS:localhost", "-addext", "basicConstraints=critical,CA:FALSE")
    keystore_file(root).write_text(broker_key.read_text() + broker_cert.read_text())
    for path in (ca_key, broker_key, broker_cert):
        path.unlink()


def broker_properties(settings: Settings, root: Path) -> dict[str, str]:
    """server.properties entries of the SASL_SSL listener: the broker's certificate and its SASL login (the broker
    connects to itself through this listener too, as the settings' user)."""
    mechanism = settings.kafka_sasl_mechanism
    login = jaas_config(settings)
    if mechanism == "PLAIN":  # PLAIN users are listed in the broker's own login line
        login = f'{login[:-1]} user_{settings.kafka_sasl_username}="{settings.kafka_sasl_password}";'
    return {
        "sasl.enabled.mechanisms": mechanism,
        "sasl.mechanism.inter.broker.protocol": mechanism,
        f"listener.name.{LISTENER.lower()}.{mechanism.lower()}.sasl.jaas.config": login,
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(keystore_file(root)),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(ca_file(root)),
    }


def format_arguments(settings: Settings) -> list[str]:
    """Extra `kafka-storage format` arguments: the SCRAM user, stored with the cluster's first metadata."""
    if not settings.kafka_sasl_mechanism.startswith("SCRAM-"):
        return []
    return ["--add-scram", f"{settings.kafka_sasl_mechanism}=[name={settings.kafka_sasl_username},"
                           f"password={settings.kafka_sasl_password}]"]
