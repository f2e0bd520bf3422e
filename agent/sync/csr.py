"""The device's TLS identity for mutual TLS with edgefleet's MQTT broker.

The key pair is made on the device and its private key never leaves it: the device sends the
certificate signing request from :func:`make_key_and_csr` to the control plane, whose CA
(``controlplane.broker.ca``) returns a client certificate with ``CN=<device_id>``. The broker takes
that CN as the device's MQTT username.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["make_key_and_csr"]


def make_key_and_csr(device_id: str) -> tuple[bytes, bytes]:
    """A fresh EC P-256 private key (PKCS8 PEM, unencrypted) and a CSR for ``CN=<device_id>`` signed
    with it (PEM): ``(key_pem, csr_pem)``. Store the key with mode 0600."""
    if not device_id or any(c in device_id for c in "/+#\0"):
        raise ValueError(f"invalid device id {device_id!r}")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)
