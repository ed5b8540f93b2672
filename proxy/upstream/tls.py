"""TLS towards upstreams: per-registry trust and client certificates, and clear failures.

A registry's ``ca_cert`` is trusted for that registry only, on top of the
system roots. Contexts are built once per set of options and reused, so
pooled connections keep working across requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from yarl import URL

from proxy.credentials.certs import CertInfo

__all__ = ["TlsContexts", "TlsOptions", "describe_tls_failure", "presented_chain"]


@dataclass(frozen=True)
class TlsOptions:
    ca_cert: str | None = None  # PEM bundle
    client_cert: str | None = None  # PEM chain
    client_key: str | None = field(default=None, repr=False)  # PEM private key

    @property
    def custom(self) -> bool:
        return bool(self.ca_cert or self.client_cert)

    def fingerprint(self) -> str:
        parts = (self.ca_cert or "", self.client_cert or "", self.client_key or "")
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()


class TlsContexts:
    def __init__(self, scratch: Path) -> None:
        self._scratch = scratch
        self._contexts: dict[str, ssl.SSLContext] = {}

    async def context(self, options: TlsOptions) -> ssl.SSLContext | bool:
        """What aiohttp's ``ssl=`` takes: True for the default roots, else our context.

        A new context is built in a thread: loading roots and a client key reads files.
        """
        if not options.custom:
            return True
        key = options.fingerprint()
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx = await asyncio.to_thread(self._build, options)
            self._contexts[key] = ctx
        return ctx

    def _build(self, options: TlsOptions) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        if options.ca_cert:
            ctx.load_verify_locations(cadata=options.ca_cert)
            # A pinned self-signed or leaf certificate is a trust anchor in
            # its own right, as Python 3.13 makes the default.
            ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        if options.client_cert and options.client_key:
            self._load_client_pair(ctx, options.client_cert, options.client_key)
        return ctx

    def _load_client_pair(self, ctx: ssl.SSLContext, cert: str, key: str) -> None:
        # load_cert_chain reads files only: the decrypted key exists on disk,
        # mode 0600, for the duration of this call.
        self._scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self._scratch, prefix="client-")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(cert.rstrip("\n") + "\n" + key)
            ctx.load_cert_chain(name)
        finally:
            os.unlink(name)


_UNKNOWN_AUTHORITY = {18, 19, 20, 21, 2}  # self-signed leaf/chain, issuer not found, unverifiable
_EXPIRED = {9, 10}  # not yet valid, expired
_NAME_MISMATCH = {62}


def describe_tls_failure(registry: str, exc: ssl.SSLError) -> str:
    """Name the reason and the fix, in the words an operator searches for."""
    fixes = (f"trust its CA with `registry-proxy registries fetch-ca {registry}`, set `ca_cert` for it, "
             "or mark it `insecure: true`")
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        detail = exc.verify_message or "verification failed"
        if code in _UNKNOWN_AUTHORITY:
            return f"TLS with {registry} failed: certificate signed by unknown authority ({detail}); {fixes}"
        if code in _EXPIRED:
            return f"TLS with {registry} failed: certificate expired or not yet valid ({detail}); renew it, or {fixes}"
        if code in _NAME_MISMATCH:
            return (f"TLS with {registry} failed: certificate name mismatch ({detail}); use an `endpoint` whose "
                    f"host the certificate names, or mark it `insecure: true`")
        return f"TLS with {registry} failed: {detail}; {fixes}"
    reason = exc.reason or str(exc)
    if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
        return (f"TLS with {registry} failed: it does not speak TLS there ({reason}); if it serves plain HTTP, "
                "set `endpoint: http://...` or `insecure: true`")
    if "CERTIFICATE_REQUIRED" in reason or "HANDSHAKE_FAILURE" in reason or "UNKNOWN_CA" in reason:
        return (f"TLS with {registry} failed: the registry refused the handshake ({reason}); it may require a "
                "client certificate: set `client_cert` and `client_key` for it")
    return f"TLS with {registry} failed: {reason}"


def presented_chain(url: str, *, timeout: float = 10.0) -> list[CertInfo]:
    """Connect without verifying and return the chain as presented. Blocking.

    What ``registries fetch-ca`` shows the operator before anything is
    trusted: subjects, expiry dates and fingerprints, nothing verified.
    """
    from cryptography import x509  # as in proxy.credentials.certs: only once a certificate is read

    parsed = URL(url)
    if parsed.scheme != "https" or not parsed.host:
        raise ValueError(f"{url} is not an https:// endpoint; there is no certificate to fetch")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    host = parsed.host
    with (socket.create_connection((host, parsed.port or 443), timeout=timeout) as raw,
          ctx.wrap_socket(raw, server_hostname=host) as tls):
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
