"""Certificates: read PEM, describe them, and fetch the chain a registry presents.

``presented_chain`` is what ``registry-proxy registries fetch-ca`` shows the
operator before anything is trusted: subjects, expiry dates and SHA-256
fingerprints, with nothing verified yet.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import asdict, dataclass
from datetime import timezone
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from yarl import URL

__all__ = ["CertInfo", "check_client_pair", "parse_bundle", "presented_chain"]


@dataclass(frozen=True)
class CertInfo:
    subject: str
    issuer: str
    not_before: str
    not_after: str
    sha256: str  # AB:CD:... as openssl prints it
    is_ca: bool
    pem: str

    @classmethod
    def of(cls, cert: x509.Certificate) -> CertInfo:
        digest = cert.fingerprint(hashes.SHA256()).hex().upper()
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = cert.subject == cert.issuer
        return cls(
            subject=cert.subject.rfc4514_string(), issuer=cert.issuer.rfc4514_string(),
            not_before=cert.not_valid_before_utc.astimezone(timezone.utc).isoformat(),
            not_after=cert.not_valid_after_utc.astimezone(timezone.utc).isoformat(),
            sha256=":".join(digest[i:i + 2] for i in range(0, len(digest), 2)), is_ca=is_ca,
            pem=cert.public_bytes(serialization.Encoding.PEM).decode())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_bundle(pem: str) -> list[CertInfo]:
    """Every certificate in a PEM bundle; ValueError with the reason otherwise."""
    try:
        certs = x509.load_pem_x509_certificates(pem.encode())
    except ValueError as exc:
        raise ValueError(f"not a PEM certificate bundle: {exc}") from None
    return [CertInfo.of(cert) for cert in certs]


def check_client_pair(cert_pem: str, key_pem: str) -> None:
    try:
        cert = x509.load_pem_x509_certificates(cert_pem.encode())[0]
    except ValueError as exc:
        raise ValueError(f"client_cert is not a PEM certificate: {exc}") from None
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"client_key is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)):
        raise ValueError("client_key must be an RSA, EC or Ed25519 key")
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if public != cert.public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo):
        raise ValueError("client_key does not belong to client_cert")


def presented_chain(url: str, *, timeout: float = 10.0) -> list[CertInfo]:
    """Connect without verifying and return the chain as presented. Blocking."""
    parsed = URL(url)
    if parsed.scheme != "https" or not parsed.host:
        raise ValueError(f"{url} is not an https:// endpoint; there is no certificate to fetch")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    host = parsed.host
    with socket.create_connection((host, parsed.port or 443), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            ders = _unverified_chain(tls)
    return [CertInfo.of(x509.load_der_x509_certificate(der)) for der in ders]


def _unverified_chain(tls: ssl.SSLSocket) -> list[bytes]:
    public = getattr(tls, "get_unverified_chain", None)  # Python 3.13+
    if public is not None:
        return [bytes(der) for der in public()]
    # 3.11 and 3.12 have it on the private object only; failing that, the leaf alone.
    private = getattr(getattr(tls, "_sslobj", None), "get_unverified_chain", None)
    if private is not None:
        return [cert.public_bytes(ssl._ssl.ENCODING_DER) for cert in private()]  # type: ignore[attr-defined]
    leaf = tls.getpeercert(binary_form=True)
    return [leaf] if leaf else []
