"""How a registry is reached: endpoint URL, insecure mode, CA bundle, client certificate, token realms;
and the alias clients may name it by.

Declared once for a `registries:` entry of the config file (certificates
named by path) and for PATCH /api/v1/upstreams/{address} (certificates
inline, null clears). Only certificate blocks are kept of a CA bundle or a
client certificate: a PEM file holding a key too must not put that key where
certificates are shown back (API, status page).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from proxy.credentials.certs import parse_bundle
from proxy.credentials.schema import Field, Group, Invalid, ValueType
from proxy.credentials.value_types import FLAG, parsed_text, text
from proxy.reference import ALIAS_PATTERN, MAX_ALIAS_LENGTH, parse_alias

__all__ = ["ALIAS", "CA_CERT", "CLIENT_CERT", "CLIENT_KEY", "CONNECTION_FIELDS", "ENDPOINT", "INSECURE", "TOKEN_REALMS",
           "UPSTREAM_CHANGE", "certificates_only", "endpoint_url", "realm_origins"]

_ENDPOINT = re.compile(r"https?://[^/\s?#@]+/?")
_STRING = {"type": "string"}
_REALM = re.compile(r"(?P<scheme>https?)://(?P<host>\[[0-9a-fA-F:.]+\]|[^/\s?#@:\[\]]+)(?::(?P<port>[0-9]{1,5}))?"
                    r"(?:[/?#]\S*)?")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def endpoint_url(value: str) -> str:
    """An http(s) URL of a registry's root: no path, no credentials; returned without a trailing slash."""
    if not _ENDPOINT.fullmatch(value):
        raise ValueError(value)
    return value.rstrip("/")


def realm_origins(value: Any) -> tuple[str, ...]:
    """Token realm URLs as origins (scheme://host:port, the port always written); Invalid names the first bad one."""
    entries = [part.strip() for part in value.split(",")] if isinstance(value, str) else value
    if not isinstance(entries, list):
        raise Invalid("Not a list of URLs.")
    origins = []
    for entry in entries:
        match = _REALM.fullmatch(entry.strip()) if isinstance(entry, str) else None
        if match is None or int(match["port"] or 0) > 65535:
            raise Invalid("Use the realm's URL, such as https://auth.example.com/token (http or https, no "
                          "credentials in it).", shown=entry)
        port = int(match["port"] or _DEFAULT_PORTS[match["scheme"]])
        origins.append(f"{match['scheme']}://{match['host'].lower()}:{port}")
    return tuple(dict.fromkeys(origins))


def _realms_from_json(value: Any, name: str) -> tuple[str, ...]:
    try:
        return realm_origins(value)
    except Invalid as exc:
        raise Invalid(f"{name}: {str(exc.quoted(value))[:80]!r} is not usable. {exc}") from None


def certificates_only(pem: str) -> str:
    """The certificate blocks of ``pem``, re-encoded; ValueError when it holds none or a broken one."""
    return "".join(cert.pem for cert in parse_bundle(pem))


def _endpoint_from_json(value: str, name: str) -> str:
    try:
        return endpoint_url(value)
    except ValueError:
        raise Invalid(f"{name} must be a URL such as https://host:port, without a path or credentials (those go in "
                      "a credential)") from None


def _endpoint_from_file(value: Any, base: Path) -> str:
    try:
        return endpoint_url(text(value))
    except ValueError:
        raise Invalid("Use a URL such as https://host:port, without a path.") from None


def _read_pem(value: Any, base: Path) -> str:
    try:
        return (base / text(value)).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise Invalid(f"Cannot read it: {exc}.") from None


def _certificates_from_json(value: str, name: str) -> str:
    try:
        return certificates_only(value)
    except ValueError as exc:
        raise Invalid(f"{name}: {exc}") from None


def _certificates_from_file(value: Any, base: Path) -> str:
    pem = _read_pem(value, base)
    try:
        return certificates_only(pem)
    except ValueError as exc:
        raise Invalid(f"{exc}.") from None


ENDPOINT = Field("endpoint", ValueType((str,), _STRING, _STRING, from_file=_endpoint_from_file,
                                       from_json=_endpoint_from_json),
                 "Reach the registry at this URL (http or https, host and port only) instead of https://<address>",
                 nullable=True)
INSECURE = Field("insecure", FLAG, "HTTPS without certificate checks, falling back to plain HTTP", nullable=True)
_CERTIFICATES = ValueType((str,), _STRING, _STRING, from_file=_certificates_from_file,
                          from_json=_certificates_from_json)
CA_CERT = Field("ca_cert", _CERTIFICATES, "CA certificates (PEM) trusted for this registry only, on top of "
                "the system's; the config file names a PEM file", nullable=True)
CLIENT_CERT = Field("client_cert", _CERTIFICATES, "Client certificate (PEM) for mutual TLS, with client_key; the "
                    "config file names a PEM file", nullable=True)
CLIENT_KEY = Field("client_key", ValueType((str,), _STRING, _STRING, from_file=_read_pem),
                   "Unencrypted private key (PEM) of client_cert; the config file names a PEM file", secret=True,
                   nullable=True)

TOKEN_REALMS = Field("token_realms", ValueType((list,), {"type": "array", "items": _STRING},
                                                {"type": ["array", "string"], "items": _STRING},
                                                from_file=lambda value, base: realm_origins(value),
                                                from_json=_realms_from_json, file_hint="a list, or a comma-separated string"),
                     "Token realms on another host or port that belong to this registry and may receive its "
                     "credentials (scheme, host and port count). Without them credentials go only to a realm on the "
                     "registry's own host and port, or Docker Hub's auth.docker.io", nullable=True)

_ALIAS_SCHEMA = {"type": "string", "pattern": f"^{ALIAS_PATTERN}$", "maxLength": MAX_ALIAS_LENGTH}
ALIAS = Field("alias", parsed_text(_ALIAS_SCHEMA, parse_alias, "Not usable as an alias"),
              "A name clients may use as the first path component instead of the address, as in "
              "proxy:5000/<alias>/team/app:1, for an address with a port (which cannot appear in a path). "
              "Lowercase letters and digits separated by '_', '__' or '-'; no dot; not `library` or `localhost`; "
              "one registry per alias. It wins over a namespace of the same name on the default registry", nullable=True)

CONNECTION_FIELDS = (ENDPOINT, INSECURE, CA_CERT, CLIENT_CERT, CLIENT_KEY, TOKEN_REALMS, ALIAS)
UPSTREAM_CHANGE = Group("UpstreamChange", "What to change of how a registry is reached; null clears a field",
                        CONNECTION_FIELDS)
