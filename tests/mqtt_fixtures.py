"""pytest fixtures for a real Mosquitto broker (see :mod:`tests.mosquitto`).

``mosquitto``: a fresh broker per test, passwords and ACL as in production, no TLS.
``mosquitto_ca``: a fresh edgefleet CA (in memory) for the test.
``mosquitto_tls``: a fresh broker per test with TLS and mutual TLS required: clients need a
certificate from ``mosquitto_tls.ca`` and their CN is their username.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.broker.ca import CertificateAuthority
from tests.mosquitto import MosquittoBroker

__all__ = ["mosquitto", "mosquitto_ca", "mosquitto_tls"]


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A broker of its own for the test: password logins, edgefleet's ACL, persistence on."""
    broker = MosquittoBroker.start(tmp_path / "mosquitto")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mosquitto_ca() -> CertificateAuthority:
    """A fresh edgefleet CA, held in memory."""
    return CertificateAuthority.generate(name="edgefleet test CA")


@pytest.fixture
def mosquitto_tls(tmp_path: Path, mosquitto_ca: CertificateAuthority) -> Iterator[MosquittoBroker]:
    """A broker of its own for the test with TLS and ``require_certificate``: the CN of a client's
    certificate (signed by ``mosquitto_ca``) is its username."""
    broker = MosquittoBroker.start(tmp_path / "mosquitto", tls=mosquitto_ca, require_certificate=True)
    try:
        yield broker
    finally:
        broker.stop()
