"""Parse and validate the configuration once, into a frozen object.

Sources, later ones winning: embedded defaults, the YAML file, environment
variables (``REGISTRY_PROXY_LISTEN``, ``REGISTRY_PROXY_DATA_DIR``), command
line flags. ``REGISTRY_PROXY_SECRET_KEY_FILE`` is the other way round: it
places the key file only when the YAML file names no ``secrets.key_file``,
so an image can keep the key in its volume under any config mounted into it
without overriding one that says where the key is. Every error names the
key and the value, in one line. The keys and what each accepts are declared
in proxy.config.schema; this module turns what the reader returns into
frozen objects.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from proxy.config.environments import EnvironmentConfig, environments_from
from proxy.config.registries import CredentialKey, RegistryConfig, registries_from
from proxy.config.runtime import parse_whitelist
from proxy.config.schema import CONFIG_FILE
from proxy.config.values import SettingsError, read_group
from proxy.credentials.kinds import CredentialInput
from proxy.credentials.value_types import DEFAULT_ENVIRONMENT

# parse_whitelist: proxy.directory reads the stored whitelist with it.
__all__ = ["DATA_DIR_ENV", "KEY_FILE_ENV", "LISTEN_ENV", "STATE_URL_ENV", "CacheSettings", "RegistryConfig",
           "ServerLimits", "ServerTls", "Settings", "SettingsError", "StateSettings", "StorageSettings",
           "UpstreamSettings", "load_settings", "parse_whitelist"]

LISTEN_ENV = "REGISTRY_PROXY_LISTEN"
DATA_DIR_ENV = "REGISTRY_PROXY_DATA_DIR"
# Wins over state.url, so the URL (and a password in it) can come from a Secret.
STATE_URL_ENV = "REGISTRY_PROXY_STATE_URL"
# Where the secret key file is when the config file does not say.
KEY_FILE_ENV = "REGISTRY_PROXY_SECRET_KEY_FILE"


@dataclass(frozen=True)
class CacheSettings:
    max_size: int = 20 * 1024**3
    tag_ttl: float = 300.0
    max_stale: float = 7 * 86400.0
    max_manifest_size: int = 4 * 1024**2
    # /readyz fails below this much free space where the cache lives.
    min_free: int = 1024**3
    revalidate_timeout: float = 3.0


@dataclass(frozen=True)
class StorageSettings:
    backend: str = "filesystem"
    bucket: str = ""
    prefix: str = ""
    region: str | None = None
    endpoint_url: str | None = None
    redirect: bool = False
    local_size: int = 10 * 1024**3

    @property
    def shared(self) -> bool:
        return self.backend == "s3"


@dataclass(frozen=True)
class StateSettings:
    # A PostgreSQL URL, or None for SQLite in data_dir. It may hold a password: never log it.
    url: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class UpstreamSettings:
    connect_timeout: float = 5.0
    response_timeout: float = 30.0
    idle_timeout: float = 60.0
    failures_before_pause: int = 5
    pause: float = 30.0


@dataclass(frozen=True)
class ServerTls:
    cert_file: Path
    key_file: Path
    reload_interval: float = 30.0


@dataclass(frozen=True)
class ServerLimits:
    header_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    # None: sized from the open-file limit when the server starts.
    max_connections: int | None = None


@dataclass(frozen=True)
class Settings:
    listen_host: str = "127.0.0.1"
    listen_port: int = 5000
    data_dir: Path = Path("data")
    cache: CacheSettings = CacheSettings()
    storage: StorageSettings = StorageSettings()
    state: StateSettings = StateSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    registries: Mapping[str, RegistryConfig] = field(default_factory=dict)
    credentials: Mapping[CredentialKey, CredentialInput] = field(default_factory=dict)
    environments: Mapping[str, EnvironmentConfig] = field(default_factory=dict)
    log_level: str = "info"
    log_format: str = "text"
    status_public: bool = False
    metrics_public: bool = True
    # Run-time settings the file names, normalised; seeded into the store at start.
    file_settings: Mapping[str, str] = field(default_factory=dict)
    admin_token_file: Path | None = None
    external_url: str | None = None
    trusted_proxies: tuple[str, ...] = ()
    # A listener of their own for the admin API, the status page and /metrics.
    admin_listen: tuple[str, int] | None = None
    secret_key_file: Path | None = None
    tls: ServerTls | None = None
    server: ServerLimits = ServerLimits()

    @property
    def key_file(self) -> Path:
        # Beside the data directory, not in it: a copy of the data alone
        # does not carry the key to its secrets.
        return self.secret_key_file or self.data_dir.parent / f"{self.data_dir.name}.key"

    @property
    def listen(self) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"


def load_settings(
    path: Path | None = None,
    *,
    listen: str | None = None,
    data_dir: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    # Relative paths in the file mean the same as in flags: from the working directory.
    base = Path.cwd()
    if path is not None:
        raw = _read_yaml(path)
    for key, env in (("listen", LISTEN_ENV), ("data_dir", DATA_DIR_ENV)):
        if environ.get(env):
            raw[key] = environ[env]
    if environ.get(STATE_URL_ENV):
        raw["state"] = {**(raw.get("state") or {}), "url": environ[STATE_URL_ENV]}
    if listen is not None:
        raw["listen"] = listen
    if data_dir is not None:
        raw["data_dir"] = data_dir
    settings = _build(raw, base)
    if settings.secret_key_file is None and environ.get(KEY_FILE_ENV):
        settings = replace(settings, secret_key_file=base / environ[KEY_FILE_ENV])
    return settings


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SettingsError(f"Config file '{path}' cannot be read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SettingsError(f"Config file '{path}' is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"Config file '{path}' must hold a mapping of keys, not {type(data).__name__}")
    return data


def _build(raw: Mapping[str, Any], base: Path) -> Settings:
    values = read_group("", raw, CONFIG_FILE, base)
    defaults = Settings()
    host, port = values.get("listen", (defaults.listen_host, defaults.listen_port))
    log, status, metrics = values.get("log", {}), values.get("status", {}), values.get("metrics", {})
    registries, credentials = registries_from(values.get("registries", []))
    environments = environments_from(values.get("environments", []))
    for (environment, address) in credentials:
        if environment not in environments and environment != DEFAULT_ENVIRONMENT:
            raise SettingsError(f"Config 'registries' gives {address} a credential in environment '{environment}', "
                                "which the file does not declare under environments.")
    admin_listen = values.get("admin", {}).get("listen")
    if admin_listen is not None and admin_listen[1] in (0, port):
        raise SettingsError(f"Config 'admin.listen' has value '{admin_listen[0]}:{admin_listen[1]}'. "
                            "Give it a port of its own, not 0 and not the one of listen.")
    storage = StorageSettings(**values.get("storage", {}))
    state = StateSettings(**values.get("state", {}))
    if storage.shared and not storage.bucket:
        raise SettingsError("Config 'storage.bucket' is missing. storage.backend s3 needs a bucket.")
    if storage.shared and state.url is None:
        raise SettingsError("Config 'state.url' is missing. storage.backend s3 needs PostgreSQL for the index "
                            "that replicas share: set state.url (or $REGISTRY_PROXY_STATE_URL).")
    return Settings(
        listen_host=host,
        listen_port=port,
        data_dir=values.get("data_dir", defaults.data_dir),
        cache=CacheSettings(**values.get("cache", {})),
        storage=storage,
        state=state,
        upstream=UpstreamSettings(**values.get("upstream", {})),
        registries=registries,
        credentials=credentials,
        environments=environments,
        log_level=log.get("level", defaults.log_level),
        log_format=log.get("format", defaults.log_format),
        status_public=status.get("public", defaults.status_public),
        metrics_public=metrics.get("public", defaults.metrics_public),
        file_settings=values.get("settings", {}),
        admin_token_file=values.get("admin", {}).get("token_file"),
        admin_listen=admin_listen,
        external_url=values.get("external_url"),
        trusted_proxies=values.get("trusted_proxies", ()),
        secret_key_file=values.get("secrets", {}).get("key_file"),
        tls=_server_tls(values.get("tls", {})),
        server=ServerLimits(**values.get("server", {})),
    )


def _server_tls(tls: Mapping[str, Any]) -> ServerTls | None:
    cert, key = tls.get("cert_file"), tls.get("key_file")
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        missing = "tls.cert_file" if cert is None else "tls.key_file"
        raise SettingsError(f"Config '{missing}' is missing. HTTPS needs both tls.cert_file and tls.key_file.")
    for name, path in (("tls.cert_file", cert), ("tls.key_file", key)):
        if not path.is_file():
            raise SettingsError(f"Config '{name}' has value '{path}'. No such file.")
    return ServerTls(cert, key, tls.get("reload_interval", ServerTls.reload_interval))
