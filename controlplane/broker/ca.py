"""A small certificate authority for edgefleet's MQTT broker: TLS for the broker, and client
certificates for mutual TLS.

The CA is an EC P-256 key and a self-signed certificate valid ten years, kept in one directory
(normally ``<data dir>/ca/``): ``ca.key`` (PKCS8 PEM, unencrypted, mode 0600) and ``ca.crt``. It
issues the broker's server certificate (:meth:`CertificateAuthority.issue_server_cert`) and signs
the certificate signing requests devices send (:meth:`CertificateAuthority.sign_csr`): a device
makes its key pair itself (:func:`agent.sync.csr.make_key_and_csr`), so its private key never
leaves it. With ``use_identity_as_username`` Mosquitto takes the certificate's CN as the username,
which is why the CN of a device certificate is always the device id the CA was told, never what
the CSR asked for.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import stat
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.fsutil import atomic_write, fsync_dir
from controlplane.broker.config import TlsFiles, check_username

__all__ = [
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "CertificateAuthority",
    "CertificateAuthorityError",
    "CsrRejected",
]

CA_KEY_FILE = "ca.key"
CA_CERT_FILE = "ca.crt"
CA_LIFETIME = timedelta(days=3650)
# Certificates start a little in the past, so a device whose clock is slightly behind accepts them.
_BACKDATE = timedelta(minutes=5)
_MAX_FILE = 64 * 1024
_ACCEPTED_CURVES = (ec.SECP256R1, ec.SECP384R1)
_MIN_RSA_BITS = 2048


class CertificateAuthorityError(Exception):
    """The CA's files cannot be used; the message names the file and the reason."""


class CsrRejected(ValueError):
    """A certificate signing request the CA refuses to sign."""


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _create_exclusive(path: Path, data: bytes, mode: int) -> bool:
    """Create ``path`` holding ``data`` (durably, exactly ``mode``) unless it exists already.

    Returns ``False``, writing nothing, if another process created ``path`` first.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)  # unlike rename, never replaces a file another process wrote
        except FileExistsError:
            return False
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return True


def _read_file(path: Path, *, private: bool) -> bytes:
    """Read a small regular file; a ``private`` one must not be accessible to group or others."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CertificateAuthorityError(f"{path} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if private and mode & 0o077:
            raise CertificateAuthorityError(
                f"CA key {path} has mode {mode:04o}: group or others may access it; "
                f"refusing to use it (run: chmod 600 {path})"
            )
        with os.fdopen(fd, "rb", closefd=False) as stream:
            data = stream.read(_MAX_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_FILE:
        raise CertificateAuthorityError(f"{path} is larger than {_MAX_FILE} bytes")
    return data


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    pem = _read_file(path, private=True)
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CertificateAuthorityError(
            f"CA key {path} is not an unencrypted PEM private key: {exc}"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateAuthorityError(f"CA key {path} holds a {type(key).__name__}, not an EC key")
    return key


def _load_certificate(path: Path) -> x509.Certificate:
    pem = _read_file(path, private=False)
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise CertificateAuthorityError(f"CA certificate {path} is not a PEM certificate: {exc}") from None


def _check_subject_key(public_key: object) -> None:
    """Refuse keys too weak (or too exotic) for the brokers and devices edgefleet runs on."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, _ACCEPTED_CURVES):
            raise CsrRejected(f"EC curve {public_key.curve.name} is not accepted (P-256 or P-384)")
    elif isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < _MIN_RSA_BITS:
            raise CsrRejected(
                f"RSA key of {public_key.key_size} bits is too short ({_MIN_RSA_BITS} at least)"
            )
    else:
        raise CsrRejected(f"{type(public_key).__name__} keys are not accepted (EC P-256/P-384 or RSA)")


class CertificateAuthority:
    """The CA's key and self-signed certificate; issues server and client certificates."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> None:
        if certificate.public_key() != key.public_key():
            raise CertificateAuthorityError("the CA certificate does not belong to the CA key")
        try:
            constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            raise CertificateAuthorityError("the CA certificate is not a CA certificate (BasicConstraints)")
        self._key = key
        self._certificate = certificate

    def __repr__(self) -> str:
        return f"CertificateAuthority(subject={self._certificate.subject.rfc4514_string()!r})"

    @staticmethod
    def _self_signed(key: ec.EllipticCurvePrivateKey, name: str) -> x509.Certificate:
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgefleet"),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        now = _now()
        public_key = key.public_key()
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .sign(key, hashes.SHA256())
        )

    @classmethod
    def generate(cls, name: str = "edgefleet CA") -> CertificateAuthority:
        """A fresh CA held in memory only."""
        key = ec.generate_private_key(ec.SECP256R1())
        return cls(key, cls._self_signed(key, name))

    @classmethod
    def load_or_create(cls, directory: Path, name: str = "edgefleet CA") -> CertificateAuthority:
        """Load the CA from ``directory`` (``ca.key``, ``ca.crt``), creating whatever is missing.

        The directory is created mode 0700, the key mode 0600 and the certificate 0644, each written
        durably and never over a file another process created first (whose content is used instead),
        so concurrent first starts agree on one key. Raises :class:`CertificateAuthorityError` if the
        key is accessible to group or others, or if the files are not an EC key and its CA certificate.
        """
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key_path = directory / CA_KEY_FILE
        cert_path = directory / CA_CERT_FILE
        try:
            key = _load_key(key_path)
        except FileNotFoundError:
            key = ec.generate_private_key(ec.SECP256R1())
            if not _create_exclusive(key_path, _key_pem(key), 0o600):
                key = _load_key(key_path)
        try:
            certificate = _load_certificate(cert_path)
        except FileNotFoundError:
            certificate = cls._self_signed(key, name)
            pem = certificate.public_bytes(serialization.Encoding.PEM)
            if not _create_exclusive(cert_path, pem, 0o644):
                certificate = _load_certificate(cert_path)
        try:
            return cls(key, certificate)
        except CertificateAuthorityError as exc:
            raise CertificateAuthorityError(f"{directory}: {exc}") from None

    @property
    def certificate(self) -> x509.Certificate:
        return self._certificate

    @property
    def ca_pem(self) -> bytes:
        """The CA certificate (PEM): what the broker and the devices trust."""
        return self._certificate.public_bytes(serialization.Encoding.PEM)

    def _issue(
        self,
        subject: x509.Name,
        public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
        *,
        days: int,
        usage: x509.ObjectIdentifier,
        alt_names: list[x509.GeneralName] | None = None,
    ) -> x509.Certificate:
        if days < 1:
            raise ValueError(f"a certificate must be valid for at least one day, not {days}")
        now = _now()
        # never valid beyond the CA itself
        not_after = min(now + timedelta(days=days), self._certificate.not_valid_after_utc)
        ca_ski = self._certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
            )
        )
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        return builder.sign(self._key, hashes.SHA256())

    def issue_server_cert(
        self, hostnames: list[str], ips: list[str], *, days: int = 825
    ) -> tuple[bytes, bytes]:
        """A fresh EC P-256 key and a serverAuth certificate for the broker, valid for the DNS names
        ``hostnames`` and the IP addresses ``ips``: ``(cert_pem, key_pem)``."""
        if not hostnames and not ips:
            raise ValueError("a server certificate needs at least one hostname or IP address")
        alt_names: list[x509.GeneralName] = [x509.DNSName(name) for name in hostnames]
        alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        common_name = hostnames[0] if hostnames else ips[0]
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = self._issue(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]),
            key.public_key(),
            days=days,
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            alt_names=alt_names,
        )
        return certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    def sign_csr(self, csr_pem: bytes, device_id: str, days: int = 365) -> bytes:
        """Sign a device's CSR: a clientAuth certificate (PEM) whose subject is ``CN=<device_id>``.

        Only the CSR's public key is used: its subject and any extensions it asks for are ignored,
        so a device cannot get a certificate for another device's id (or for a CA). Raises
        :class:`CsrRejected` if the CSR does not parse, its signature does not verify (whoever sent
        it does not hold the key) or its key is not EC P-256/P-384 or RSA of 2048 bits or more.
        """
        check_username(device_id)
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise CsrRejected(f"not a PEM certificate signing request: {exc}") from None
        try:
            valid = csr.is_signature_valid
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise CsrRejected(f"the CSR's signature cannot be checked: {exc}") from None
        if not valid:
            raise CsrRejected("the CSR's signature does not verify")
        public_key = csr.public_key()
        _check_subject_key(public_key)
        assert isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
        certificate = self._issue(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]),
            public_key,
            days=days,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        )
        return certificate.public_bytes(serialization.Encoding.PEM)

    def issue_crl(self, revoked: Iterable[tuple[str, datetime]]) -> bytes:
        """A certificate revocation list (PEM) naming ``revoked``: (serial number in hex, as
        :func:`certificate_serial` gives it, and when it was revoked). It is valid until the CA
        itself expires: the broker reads the file the control plane rewrites, so there is no
        distribution point to refresh, and an expired list would make Mosquitto refuse everyone."""
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self._certificate.subject)
            .last_update(now)
            .next_update(max(self._certificate.not_valid_after_utc, now + timedelta(days=1)))
        )
        for serial, when in sorted(revoked):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(int(serial, 16)).revocation_date(when).build()
            )
        return builder.sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    def write_crl(self, path: Path, revoked: Iterable[tuple[str, datetime]]) -> Path:
        """Replace ``path`` with :meth:`issue_crl` atomically (mode 0644: it holds no secret), so a
        broker reloading on SIGHUP reads the old list or the new one."""
        atomic_write(path, self.issue_crl(revoked))
        path.chmod(0o644)
        return path

    def issue_client_cert(self, common_name: str, *, days: int = 365) -> tuple[bytes, bytes]:
        """A fresh EC P-256 key and a clientAuth certificate for ``CN=<common_name>``:
        ``(cert_pem, key_pem)``. For the control plane's own MQTT connection under mutual TLS, made
        where the control plane runs; devices make their own keys and send a CSR instead."""
        check_username(common_name)
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = self._issue(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]),
            key.public_key(),
            days=days,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        )
        return certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    def write_server_files(
        self, directory: Path, hostnames: list[str], ips: list[str], *, owner_uid: int | None = None
    ) -> TlsFiles:
        """Write ``ca.crt``, ``server.crt`` and ``server.key`` (mode 0600) for the broker into
        ``directory`` with a fresh server certificate; ``owner_uid`` (needs root) gives the key to the
        user the broker runs as. Returns their paths, for ``render_mosquitto_conf``."""
        directory.mkdir(parents=True, exist_ok=True)
        cert_pem, key_pem = self.issue_server_cert(hostnames, ips)
        files = TlsFiles(
            cafile=directory / "ca.crt", certfile=directory / "server.crt", keyfile=directory / "server.key"
        )
        atomic_write(files.keyfile, key_pem)  # atomic_write's files are mode 0600
        if owner_uid is not None:
            os.chown(files.keyfile, owner_uid, -1)
        for path, pem in ((files.cafile, self.ca_pem), (files.certfile, cert_pem)):
            atomic_write(path, pem)
            path.chmod(0o644)
        return files


def certificate_serial(pem: bytes) -> str:
    """The serial number of a PEM certificate in lower-case hex (as a device's row keeps it)."""
    return format(x509.load_pem_x509_certificate(pem).serial_number, "x")
