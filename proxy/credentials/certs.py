"""Certificates: read PEM bundles, describe them, check a client certificate against its key.

Pure parsing: the config file, the admin API and the status page all read
certificates through here, so they agree on what a bundle holds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography import x509

# cryptography is imported where a certificate is read, not here: it adds
# some 8 MiB to the resident size, and a proxy configured without
# certificates never reads one.

__all__ = ["CertInfo", "check_client_pair", "parse_bundle"]


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
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization

        digest = cert.fingerprint(hashes.SHA256()).hex().upper()
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = cert.subject == cert.issuer
        return cls(
            subject=cert.subject.rfc4514_string(), issuer=cert.issuer.rfc4514_string(),
            not_before=cert.not_valid_before_utc.astimezone(UTC).isoformat(),
            not_after=cert.not_valid_after_utc.astimezone(UTC).isoformat(),
            sha256=":".join(digest[i:i + 2] for i in range(0, len(digest), 2)), is_ca=is_ca,
            pem=cert.public_bytes(serialization.Encoding.PEM).decode())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_bundle(pem: str) -> list[CertInfo]:
    """Every certificate in a PEM bundle; ValueError with the reason otherwise."""
    from cryptography import x509

    try:
        certs = x509.load_pem_x509_certificates(pem.encode())
    except ValueError as exc:
        raise ValueError(f"not a PEM certificate bundle: {exc}") from None
    return [CertInfo.of(cert) for cert in certs]


def check_client_pair(cert_pem: str, key_pem: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

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
