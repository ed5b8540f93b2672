"""Parse and validate the configuration once, into a frozen object.

Sources, later ones winning: embedded defaults, the YAML file, environment
variables (``REGISTRY_PROXY_LISTEN``, ``REGISTRY_PROXY_DATA_DIR``), command
line flags. Every error names the key and the value, in one line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from proxy.config.registries import RegistryConfig, parse_registries
from proxy.config.values import (
    SettingsError,
    boolean,
    check_keys,
    duration,
    file_path,
    mapping,
    registry_address,
    size,
    string,
)
from proxy.reference import DOCKER_HUB

__all__ = ["CacheSettings", "RegistryConfig", "ServerTls", "Settings", "SettingsError", "load_settings"]

_TOP_KEYS = ("listen", "data_dir", "settings", "cache", "registries", "log", "admin", "secrets", "tls", "status",
             "metrics")
_PUBLIC_KEYS = ("public",)
_SETTING_NAMES = ("registry.default", "registry.whitelist")
_CACHE_KEYS = ("max_size", "tag_ttl", "max_stale", "max_manifest_size", "min_free")
_LOG_KEYS = ("level", "format")
_LOG_FORMATS = ("text", "json")
_ADMIN_KEYS = ("token_file",)
_SECRETS_KEYS = ("key_file",)
_TLS_KEYS = ("cert_file", "key_file", "reload_interval")
_LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class CacheSettings:
    max_size: int = 20 * 1024**3
    tag_ttl: float = 300.0
    max_stale: float = 7 * 86400.0
    max_manifest_size: int = 4 * 1024**2
    # /readyz fails below this much free space where the cache lives.
    min_free: int = 1024**3


@dataclass(frozen=True)
class ServerTls:
    cert_file: Path
    key_file: Path
    reload_interval: float = 30.0


@dataclass(frozen=True)
class Settings:
    listen_host: str = "127.0.0.1"
    listen_port: int = 5000
    data_dir: Path = Path("data")
    default_registry: str = DOCKER_HUB
    whitelist: frozenset[str] = frozenset()
    cache: CacheSettings = CacheSettings()
    registries: Mapping[str, RegistryConfig] = field(default_factory=dict)
    log_level: str = "info"
    log_format: str = "text"
    status_public: bool = False
    metrics_public: bool = True
    # Run-time settings the file names, normalised; seeded into the store at start.
    file_settings: Mapping[str, str] = field(default_factory=dict)
    admin_token_file: Path | None = None
    secret_key_file: Path | None = None
    tls: ServerTls | None = None

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
    for key, env in (("listen", "REGISTRY_PROXY_LISTEN"), ("data_dir", "REGISTRY_PROXY_DATA_DIR")):
        if environ.get(env):
            raw[key] = environ[env]
    if listen is not None:
        raw["listen"] = listen
    if data_dir is not None:
        raw["data_dir"] = data_dir
    return _build(raw, base)


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
    check_keys("", raw, _TOP_KEYS)
    defaults = Settings()
    host, port = defaults.listen_host, defaults.listen_port
    if "listen" in raw:
        host, port = _parse_listen(string("listen", raw["listen"]))
    data_dir = defaults.data_dir
    if "data_dir" in raw:
        data_dir = base / string("data_dir", raw["data_dir"])
    settings = _flatten("settings", mapping("settings", raw.get("settings", {})))
    check_keys("settings.", settings, _SETTING_NAMES)
    default_registry = DOCKER_HUB
    if settings.get("registry.default") not in (None, ""):
        default_registry = registry_address("settings.registry.default", settings["registry.default"])
    whitelist = parse_whitelist(string("settings.registry.whitelist", settings.get("registry.whitelist") or ""),
                                key="settings.registry.whitelist")
    file_settings = {"registry.default": default_registry} if "registry.default" in settings else {}
    if "registry.whitelist" in settings:
        file_settings["registry.whitelist"] = ", ".join(sorted(whitelist))
    admin = mapping("admin", raw.get("admin", {}))
    check_keys("admin.", admin, _ADMIN_KEYS)
    secrets = mapping("secrets", raw.get("secrets", {}))
    check_keys("secrets.", secrets, _SECRETS_KEYS)
    tls = _server_tls(mapping("tls", raw.get("tls", {})), base)
    log = mapping("log", raw.get("log", {}))
    check_keys("log.", log, _LOG_KEYS)
    log_level = string("log.level", log.get("level", "info")).lower()
    if log_level not in _LOG_LEVELS:
        raise SettingsError(f"Config 'log.level' has value '{log_level}'. Use one of: {', '.join(_LOG_LEVELS)}.")
    log_format = string("log.format", log.get("format", "text")).lower()
    if log_format not in _LOG_FORMATS:
        raise SettingsError(f"Config 'log.format' has value '{log_format}'. Use one of: {', '.join(_LOG_FORMATS)}.")
    status = mapping("status", raw.get("status", {}))
    check_keys("status.", status, _PUBLIC_KEYS)
    metrics = mapping("metrics", raw.get("metrics", {}))
    check_keys("metrics.", metrics, _PUBLIC_KEYS)
    return Settings(
        listen_host=host,
        listen_port=port,
        data_dir=data_dir,
        default_registry=default_registry,
        whitelist=whitelist,
        cache=_cache(mapping("cache", raw.get("cache", {}))),
        registries=parse_registries(raw.get("registries", []), base),
        log_level=log_level,
        log_format=log_format,
        status_public=boolean("status.public", status.get("public", False)),
        metrics_public=boolean("metrics.public", metrics.get("public", True)),
        file_settings=file_settings,
        admin_token_file=file_path(base, "admin.token_file", admin.get("token_file")),
        secret_key_file=file_path(base, "secrets.key_file", secrets.get("key_file")),
        tls=tls,
    )


def parse_whitelist(value: str, *, key: str) -> frozenset[str]:
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    return frozenset(registry_address(key, entry) for entry in entries)


def _cache(raw: Mapping[str, Any]) -> CacheSettings:
    check_keys("cache.", raw, _CACHE_KEYS)
    d = CacheSettings()
    return CacheSettings(
        max_size=size("cache.max_size", raw.get("max_size", d.max_size)),
        tag_ttl=duration("cache.tag_ttl", raw.get("tag_ttl", d.tag_ttl)),
        max_stale=duration("cache.max_stale", raw.get("max_stale", d.max_stale)),
        max_manifest_size=size("cache.max_manifest_size", raw.get("max_manifest_size", d.max_manifest_size)),
        min_free=size("cache.min_free", raw.get("min_free", d.min_free)),
    )


def _flatten(prefix: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    # Accept both `registry.default: x` and `registry: {default: x}`.
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            for sub, subvalue in _flatten(f"{prefix}.{key}", value).items():
                out[f"{key}.{sub}"] = subvalue
        else:
            out[str(key)] = value
    return out


def _parse_listen(value: str) -> tuple[str, int]:
    match = re.fullmatch(r"(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<host>[^:\[\]]*)):(?P<port>[0-9]{1,5})", value)
    if not match or not 0 <= int(match["port"]) < 65536:
        raise SettingsError(f"Config 'listen' has value '{value}'. Use host:port, e.g. 127.0.0.1:5000 or 0.0.0.0:5000.")
    return (match["v6"] or match["host"] or "0.0.0.0"), int(match["port"])


def _server_tls(raw: Mapping[str, Any], base: Path) -> ServerTls | None:
    check_keys("tls.", raw, _TLS_KEYS)
    cert, key = raw.get("cert_file"), raw.get("key_file")
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        missing = "tls.cert_file" if cert is None else "tls.key_file"
        raise SettingsError(f"Config '{missing}' is missing. HTTPS needs both tls.cert_file and tls.key_file.")
    tls = ServerTls(base / string("tls.cert_file", cert), base / string("tls.key_file", key),
                    duration("tls.reload_interval", raw.get("reload_interval", 30)))
    if tls.reload_interval < 0.1:
        raise SettingsError(f"Config 'tls.reload_interval' has value '{raw.get('reload_interval')}'. "
                            "Use at least 0.1s.")
    for name, path in (("tls.cert_file", tls.cert_file), ("tls.key_file", tls.key_file)):
        if not path.is_file():
            raise SettingsError(f"Config '{name}' has value '{path}'. No such file.")
    return tls

