"""The config file's keys, declared once: what the reader accepts and what the Helm chart's schema says.

The tree below is the file's layout. proxy.config.values walks it to read a
file, and ``config_json_schema()`` renders it as the `config` part of
charts/registry-proxy/values.schema.json (a test holds the two equal), so a
key added here reaches both. Credential fields come from
proxy.credentials.fields, connection fields from proxy.config.connection and
the run-time settings from proxy.config.runtime: each is declared once.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from proxy.config.connection import ALIAS, CA_CERT, CLIENT_CERT, CLIENT_KEY, ENDPOINT, INSECURE, TOKEN_REALMS
from proxy.config.environments import ENVIRONMENT_ENTRY, NETWORKS
from proxy.config.runtime import SETTINGS
from proxy.credentials.fields import (
    ACCESS_KEY_ID,
    ADDRESS_FIELD,
    AWS_ENDPOINT_URL,
    EMAIL,
    ENVIRONMENT,
    KIND,
    MODE,
    PASSWORD,
    RENEW_MARGIN,
    ROLE_ARN,
    SECRET_ACCESS_KEY,
    SECRET_FILES,
    USERNAME,
)
from proxy.credentials.schema import Field, Group, Invalid, ListOf, ValueType, file_schema
from proxy.credentials.value_types import DURATION, FLAG, TEXT, parse_duration, text

__all__ = ["CACHE", "CONFIG_FILE", "LOG", "REGISTRY_ENTRY", "STATE", "STORAGE", "TLS", "UPSTREAM", "config_json_schema",
           "parse_size"]

_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
               "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4,
               "tb": 1000**4, "tib": 1024**4}
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*")
# The units, case-insensitively, in a pattern JSON Schema validators share (no inline flags).
_SIZE_PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*({})?\s*$".format(
    "|".join("".join(f"[{c}{c.upper()}]" for c in unit) for unit in _SIZE_UNITS if unit))
_LISTEN = re.compile(r"(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<host>[^:\[\]]*)):(?P<port>[0-9]{1,5})")


def parse_size(value: Any) -> int:
    """Bytes, from a number of them or a number with a unit (512MiB, 20GiB, 1.5GB)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.fullmatch(str(value))
    unit = match[2].lower() if match else None
    if match is None or unit not in _SIZE_UNITS or isinstance(value, bool):
        raise Invalid("Not a valid size (e.g. 512MiB, 20GiB).")
    return int(float(match[1]) * _SIZE_UNITS[unit])


def _listen(value: Any, base: Path) -> tuple[str, int]:
    written = text(value)
    match = _LISTEN.fullmatch(written)
    if not match or not 0 <= int(match["port"]) < 65536:
        raise Invalid("Use host:port, e.g. 127.0.0.1:5000 or 0.0.0.0:5000.", shown=written)
    return (match["v6"] or match["host"] or "0.0.0.0"), int(match["port"])


def _external_url(value: Any, base: Path) -> str:
    written = text(value).rstrip("/")
    if not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+(/[^\s?#]*)?", written):
        raise Invalid("Use the URL clients reach the proxy at, e.g. https://proxy.example.com.")
    return written


def _positive(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise Invalid("Use a whole number, 1 or more.")
    return value


# A whole number, 1 or more.
POSITIVE = ValueType((int,), {"type": "integer", "minimum": 1}, {"type": "integer", "minimum": 1},
                     from_file=lambda value, base: _positive(value))


def _choice(values: tuple[str, ...]) -> ValueType:
    def choose(value: Any, base: Path) -> str:
        chosen = text(value).lower()
        if chosen not in values:
            raise Invalid(f"Use one of: {', '.join(values)}.", shown=chosen)
        return chosen

    schema = {"type": "string", "enum": list(values)}
    return ValueType((str,), schema, schema, from_file=choose)


def _at_least(minimum: float) -> ValueType:
    def seconds(value: Any, base: Path) -> float:
        parsed = parse_duration(value)
        if parsed < minimum:
            raise Invalid(f"Use at least {minimum}s.")
        return parsed

    return replace(DURATION, file_schema={**DURATION.file_schema, "minimum": minimum}, from_file=seconds)


_STRING = {"type": "string"}
LISTEN = ValueType((str,), _STRING, _STRING, from_file=_listen)
SIZE = ValueType((int,), {"type": "integer", "minimum": 0},
                 {"type": ["string", "integer"], "pattern": _SIZE_PATTERN, "minimum": 0},
                 from_file=lambda value, base: parse_size(value),
                 file_hint="bytes, or a number with a unit (512MiB, 20GiB)")
# A file or directory; relative paths are taken from the working directory.
PATH = ValueType((str,), _STRING, _STRING, from_file=lambda value, base: base / text(value))

CACHE = Group("cache", "Cache bounds and freshness", (
    Field("max_size", SIZE, "Upper bound of cached content; least recently used blobs are evicted first"),
    Field("tag_ttl", DURATION, "How long a tag is trusted before a HEAD revalidates it"),
    Field("max_stale", DURATION, "How long past tag_ttl a cached tag is served while the upstream fails"),
    Field("max_manifest_size", SIZE, "Larger manifests are refused"),
    Field("min_free", SIZE, "/readyz fails when less than this is free where the cache lives"),
    Field("revalidate_timeout", _at_least(0.1), "How long a tag's revalidation may take while a cached copy could "
                                                "be served; past it, the cached copy is served, marked stale"),
))
UPSTREAM = Group("upstream", "How long upstreams may take, and when one that keeps failing is left alone", (
    Field("connect_timeout", _at_least(0.1), "To open a connection"),
    Field("response_timeout", _at_least(0.1), "From sending a request to the response headers"),
    Field("idle_timeout", _at_least(0.1), "Between two reads of a response body"),
    Field("failures_before_pause", POSITIVE,
          "Connection failures and timeouts in a row after which an upstream is not asked for a while"),
    Field("pause", _at_least(0.1), "How long such an upstream is left alone before one request probes it"),
))
_ENTRY_FIELDS = (ADDRESS_FIELD, ALIAS, ENVIRONMENT, ENDPOINT, USERNAME, PASSWORD, SECRET_FILES["password"], EMAIL,
                 INSECURE, CA_CERT, CLIENT_CERT, CLIENT_KEY, KIND, ACCESS_KEY_ID, SECRET_ACCESS_KEY,
                 SECRET_FILES["secret_access_key"], ROLE_ARN, AWS_ENDPOINT_URL, RENEW_MARGIN, SECRET_FILES["json_key"],
                 MODE, TOKEN_REALMS)
REGISTRY_ENTRY = Group(
    "registry", "One upstream registry: how to reach it, and its credential", _ENTRY_FIELDS,
    null_is_unset=True, on_missing="Every registry needs an address.",
    # A secret is written inline or named by its file, not both.
    either=tuple((name, file.name) for name, file in SECRET_FILES.items() if file in _ENTRY_FIELDS
                 and any(f.name == name for f in _ENTRY_FIELDS)))
LOG = Group("log", "Logging", (
    Field("level", _choice(("debug", "info", "warning", "error")), "Log level"),
    Field("format", _choice(("text", "json")), "text, or json: one JSON object a line, for log collectors"),
))
TLS = Group("tls", "HTTPS for the proxy: set both files", (
    Field("cert_file", PATH, "PEM certificate chain, leaf first"),
    Field("key_file", PATH, "PEM private key"),
    Field("reload_interval", _at_least(0.1), "How often the files are checked for changes"),
), null_is_unset=True)
SERVER = Group("server", "Client connections: slow clients must not hold them, nor all file descriptors", (
    Field("header_timeout", _at_least(0.1), "How long a client may take to send a request's headers, from "
                                            "connecting or from the first byte of a later request"),
    Field("keepalive_timeout", _at_least(0.1), "How long an idle kept-alive connection stays open"),
    Field("max_connections", POSITIVE,
          "Client connections open at once; at the limit a new one closes the one that has waited longest for "
          "its request headers. Unset: the open-file limit less 512, and at least half of it"),
), null_is_unset=True)
_PUBLIC = "Serve it without the admin token"


def _state_url(value: Any, base: Path) -> str:
    written = text(value)
    if not re.fullmatch(r"postgres(ql)?://\S+", written):
        # Never quoted back: the URL may carry a password.
        raise Invalid("Use a PostgreSQL URL, e.g. postgresql://proxy@db.example.com/proxy (the password in "
                      "$PGPASSWORD or the URL).", shown="(hidden)")
    return written


def _s3_url(value: Any, base: Path) -> str:
    written = text(value).rstrip("/")
    if not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+(/\S*)?", written):
        raise Invalid("Use the S3 API's URL, e.g. https://minio.example.com:9000.")
    return written


STORAGE = Group("storage", "Where cached content lives: the local disk (default), or an S3-compatible bucket shared "
                           "by replicas", (
    Field("backend", _choice(("filesystem", "s3")), "filesystem (under data_dir), or s3 (needs bucket and state.url)"),
    Field("bucket", TEXT, "S3 bucket (s3)"),
    Field("prefix", TEXT, "Key prefix inside the bucket (s3), e.g. registry-proxy/"),
    Field("region", TEXT, "S3 region (s3); unset: from the AWS configuration"),
    Field("endpoint_url", ValueType((str,), _STRING, {"type": "string", "pattern": "^https?://"}, from_file=_s3_url),
          "S3 API URL for MinIO, Ceph RGW and the like (s3); unset: AWS. Credentials come from the standard AWS "
          "chain: environment, web identity (IRSA), instance profile"),
    Field("redirect", FLAG, "Answer warm blob GETs with a redirect to a presigned URL instead of streaming them "
                            "(s3); only when clients can reach the storage"),
    Field("local_size", SIZE, "Local disk tier under data_dir (s3): hot blobs are served from it without a round "
                              "trip to the bucket, and downloads stage through it; 0 keeps nothing after a download"),
), null_is_unset=True)
STATE = Group("state", "Where credentials, settings, environments, pull keys and the tag index live", (
    Field("url", ValueType((str,), _STRING, {"type": "string", "pattern": "^postgres(ql)?://"},
                           from_file=_state_url),
          "PostgreSQL URL shared by replicas; the password from $PGPASSWORD or the URL; "
          "$REGISTRY_PROXY_STATE_URL wins. Unset: SQLite in data_dir"),
), null_is_unset=True)

CONFIG_FILE = Group("config", "The proxy's config file (see config/registry-proxy.yaml)", (
    Field("listen", LISTEN, "host:port to serve on"),
    Field("data_dir", PATH, "Cache and state"),
    Field("external_url", ValueType((str,), _STRING, {"type": "string", "pattern": "^https?://"},
                                    from_file=_external_url),
          "The URL clients reach the proxy at behind an ingress or load balancer; the token realm is built from it. "
          "Unset: from the address each client used"),
    Field("trusted_proxies", NETWORKS, "Load balancers and ingress controllers in front of the proxy, as networks: "
                                       "from them, X-Forwarded-For names the client (for anonymous_from and the "
                                       "failed-login limit)"),
    SETTINGS,
    CACHE,
    STORAGE,
    STATE,
    UPSTREAM,
    ListOf("registries", "Upstream registries that need credentials or another address", REGISTRY_ENTRY),
    ListOf("environments", "Environments (tenants) with their pull keys; `default` exists without being listed",
           ENVIRONMENT_ENTRY),
    LOG,
    Group("admin", "Admin API", (
        Field("token_file", PATH, "File holding the admin token"),
        Field("listen", LISTEN, "host:port of a separate listener for the admin API, the status page and /metrics; "
                                "unset: they share the registry's port"),
    ), null_is_unset=True),
    Group("secrets", "Secrets at rest", (Field("key_file", PATH, "File holding the secret key"),), null_is_unset=True),
    TLS,
    SERVER,
    Group("status", "The status page", (Field("public", FLAG, _PUBLIC),)),
    Group("metrics", "/metrics", (Field("public", FLAG, _PUBLIC),)),
))


def config_json_schema() -> dict[str, Any]:
    """JSON Schema (draft-07) of the config file: the `config` part of the chart's values.schema.json."""
    return file_schema(CONFIG_FILE)
