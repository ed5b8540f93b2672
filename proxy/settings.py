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

from proxy.reference import DOCKER_HUB, InvalidReference, parse_address
from proxy.credential_kinds import CredentialInput, KindError, parse_credential
from proxy.upstream.certs import check_client_pair, parse_bundle

__all__ = ["CacheSettings", "RegistryConfig", "ServerTls", "Settings", "SettingsError", "load_settings"]

_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
               "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4,
               "tb": 1000**4, "tib": 1024**4}
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_TOP_KEYS = ("listen", "data_dir", "settings", "cache", "registries", "log", "admin", "secrets", "tls", "status",
             "metrics")
_PUBLIC_KEYS = ("public",)
_SETTING_NAMES = ("registry.default", "registry.whitelist")
_CACHE_KEYS = ("max_size", "tag_ttl", "max_stale", "max_manifest_size", "min_free")
_REGISTRY_KEYS = ("address", "endpoint", "username", "password", "password_file", "email", "insecure",
                  "ca_cert", "client_cert", "client_key", "kind", "access_key_id", "secret_access_key",
                  "secret_access_key_file", "role_arn", "aws_endpoint_url", "renew_margin", "json_key_file", "mode")
_LOG_KEYS = ("level", "format")
_LOG_FORMATS = ("text", "json")
_ADMIN_KEYS = ("token_file",)
_SECRETS_KEYS = ("key_file",)
_TLS_KEYS = ("cert_file", "key_file", "reload_interval")
_LOG_LEVELS = ("debug", "info", "warning", "error")


class SettingsError(ValueError):
    """A configuration problem, worded for a one-line start-up failure."""


@dataclass(frozen=True)
class RegistryConfig:
    address: str
    endpoint: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    email: str | None = None
    insecure: bool = False
    # PEM contents, read from the files the config names.
    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = field(default=None, repr=False)
    # Derived from the fields above (and the kind's own), so not part of equality.
    credential: CredentialInput | None = field(default=None, compare=False)

    @property
    def sets_upstream(self) -> bool:
        """Whether the file decides how to reach this registry (endpoint or TLS)."""
        return bool(self.endpoint or self.insecure or self.ca_cert or self.client_cert)


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
    _check_keys("", raw, _TOP_KEYS)
    defaults = Settings()
    host, port = defaults.listen_host, defaults.listen_port
    if "listen" in raw:
        host, port = _parse_listen(_string("listen", raw["listen"]))
    data_dir = defaults.data_dir
    if "data_dir" in raw:
        data_dir = base / _string("data_dir", raw["data_dir"])
    settings = _flatten("settings", _mapping("settings", raw.get("settings", {})))
    _check_keys("settings.", settings, _SETTING_NAMES)
    default_registry = DOCKER_HUB
    if settings.get("registry.default") not in (None, ""):
        default_registry = _address("settings.registry.default", settings["registry.default"])
    whitelist = parse_whitelist(_string("settings.registry.whitelist", settings.get("registry.whitelist") or ""),
                                key="settings.registry.whitelist")
    file_settings = {"registry.default": default_registry} if "registry.default" in settings else {}
    if "registry.whitelist" in settings:
        file_settings["registry.whitelist"] = ", ".join(sorted(whitelist))
    admin = _mapping("admin", raw.get("admin", {}))
    _check_keys("admin.", admin, _ADMIN_KEYS)
    secrets = _mapping("secrets", raw.get("secrets", {}))
    _check_keys("secrets.", secrets, _SECRETS_KEYS)
    tls = _server_tls(_mapping("tls", raw.get("tls", {})), base)
    log = _mapping("log", raw.get("log", {}))
    _check_keys("log.", log, _LOG_KEYS)
    log_level = _string("log.level", log.get("level", "info")).lower()
    if log_level not in _LOG_LEVELS:
        raise SettingsError(f"Config 'log.level' has value '{log_level}'. Use one of: {', '.join(_LOG_LEVELS)}.")
    log_format = _string("log.format", log.get("format", "text")).lower()
    if log_format not in _LOG_FORMATS:
        raise SettingsError(f"Config 'log.format' has value '{log_format}'. Use one of: {', '.join(_LOG_FORMATS)}.")
    status = _mapping("status", raw.get("status", {}))
    _check_keys("status.", status, _PUBLIC_KEYS)
    metrics = _mapping("metrics", raw.get("metrics", {}))
    _check_keys("metrics.", metrics, _PUBLIC_KEYS)
    return Settings(
        listen_host=host,
        listen_port=port,
        data_dir=data_dir,
        default_registry=default_registry,
        whitelist=whitelist,
        cache=_cache(_mapping("cache", raw.get("cache", {}))),
        registries=_registries(raw.get("registries", []), base),
        log_level=log_level,
        log_format=log_format,
        status_public=_bool("status.public", status.get("public", False)),
        metrics_public=_bool("metrics.public", metrics.get("public", True)),
        file_settings=file_settings,
        admin_token_file=_path(base, "admin.token_file", admin.get("token_file")),
        secret_key_file=_path(base, "secrets.key_file", secrets.get("key_file")),
        tls=tls,
    )


def parse_whitelist(value: str, *, key: str) -> frozenset[str]:
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    return frozenset(_address(key, entry) for entry in entries)


def _cache(raw: Mapping[str, Any]) -> CacheSettings:
    _check_keys("cache.", raw, _CACHE_KEYS)
    d = CacheSettings()
    return CacheSettings(
        max_size=_size("cache.max_size", raw.get("max_size", d.max_size)),
        tag_ttl=_duration("cache.tag_ttl", raw.get("tag_ttl", d.tag_ttl)),
        max_stale=_duration("cache.max_stale", raw.get("max_stale", d.max_stale)),
        max_manifest_size=_size("cache.max_manifest_size", raw.get("max_manifest_size", d.max_manifest_size)),
        min_free=_size("cache.min_free", raw.get("min_free", d.min_free)),
    )


def _registries(raw: Any, base: Path) -> dict[str, RegistryConfig]:
    if not isinstance(raw, list):
        raise SettingsError(f"Config 'registries' has value '{raw}'. Not a list of registries.")
    out: dict[str, RegistryConfig] = {}
    for i, entry in enumerate(raw):
        key = f"registries[{i}]"
        entry = _mapping(key, entry)
        _check_keys(f"{key}.", entry, _REGISTRY_KEYS)
        if "address" not in entry:
            raise SettingsError(f"Config '{key}.address' is missing. Every registry needs an address.")
        address = _address(f"{key}.address", entry["address"])
        password = _optional_string(f"{key}.password", entry.get("password"))
        if "password_file" in entry:
            if password is not None:
                raise SettingsError(f"Config '{key}' sets both password and password_file. Keep one.")
            password = _read_secret(f"{key}.password_file", base / _string(f"{key}.password_file", entry["password_file"]))
        ca_cert = _pem_file(base, f"{key}.ca_cert", entry.get("ca_cert"))
        client_cert = _pem_file(base, f"{key}.client_cert", entry.get("client_cert"))
        client_key = _pem_file(base, f"{key}.client_key", entry.get("client_key"))
        _check_tls(key, ca_cert, client_cert, client_key)
        endpoint = _optional_string(f"{key}.endpoint", entry.get("endpoint"))
        if endpoint is not None:
            endpoint = _endpoint(f"{key}.endpoint", endpoint)
        credential = _credential(key, entry, address, password, base)
        # A later entry for the same address replaces the earlier one, so an
        # override can be appended without editing the original entry.
        out[address] = RegistryConfig(
            address=address,
            endpoint=endpoint,
            username=_optional_string(f"{key}.username", entry.get("username")),
            password=password,
            email=_optional_string(f"{key}.email", entry.get("email")),
            insecure=_bool(f"{key}.insecure", entry.get("insecure", False)),
            ca_cert=ca_cert,
            client_cert=client_cert,
            client_key=client_key,
            credential=credential,
        )
    return out


def _check_keys(prefix: str, raw: Mapping[str, Any], known: tuple[str, ...]) -> None:
    for key in raw:
        if key not in known:
            raise SettingsError(f"Config '{prefix}{key}' is not a known key. Known keys here: {', '.join(known)}.")


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


def _endpoint(key: str, value: str) -> str:
    if not re.fullmatch(r"https?://[^/\s?#@]+/?", value):
        raise SettingsError(f"Config '{key}' has value '{value}'. Use a URL such as https://host:port, without a path.")
    return value.rstrip("/")


def _server_tls(raw: Mapping[str, Any], base: Path) -> ServerTls | None:
    _check_keys("tls.", raw, _TLS_KEYS)
    cert, key = raw.get("cert_file"), raw.get("key_file")
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        missing = "tls.cert_file" if cert is None else "tls.key_file"
        raise SettingsError(f"Config '{missing}' is missing. HTTPS needs both tls.cert_file and tls.key_file.")
    tls = ServerTls(base / _string("tls.cert_file", cert), base / _string("tls.key_file", key),
                    _duration("tls.reload_interval", raw.get("reload_interval", 30)))
    if tls.reload_interval < 0.1:
        raise SettingsError(f"Config 'tls.reload_interval' has value '{raw.get('reload_interval')}'. "
                            "Use at least 0.1s.")
    for name, path in (("tls.cert_file", tls.cert_file), ("tls.key_file", tls.key_file)):
        if not path.is_file():
            raise SettingsError(f"Config '{name}' has value '{path}'. No such file.")
    return tls


def _path(base: Path, key: str, value: Any) -> Path | None:
    return None if value is None else base / _string(key, value)


def _credential(key: str, entry: Mapping[str, Any], address: str, password: str | None,
                base: Path) -> CredentialInput | None:
    kind = _string(f"{key}.kind", entry.get("kind", "basic"))
    body: dict[str, Any] = {"kind": kind}
    if entry.get("email") is not None:
        body["email"] = _string(f"{key}.email", entry["email"])
    if kind == "basic":
        if entry.get("username") is None and password is None:
            return None
        body.update(username=entry.get("username"), password=password)
    for name in ("access_key_id", "role_arn", "aws_endpoint_url", "mode"):
        if entry.get(name) is not None:
            body[name] = _string(f"{key}.{name}", entry[name])
    if entry.get("renew_margin") is not None:
        body["renew_margin"] = _duration(f"{key}.renew_margin", entry["renew_margin"])
    secret_key = _optional_string(f"{key}.secret_access_key", entry.get("secret_access_key"))
    if entry.get("secret_access_key_file") is not None:
        secret_key = _read_secret(f"{key}.secret_access_key_file",
                                  base / _string(f"{key}.secret_access_key_file", entry["secret_access_key_file"]))
    if secret_key is not None:
        body["secret_access_key"] = secret_key
    if entry.get("json_key_file") is not None:
        body["json_key"] = _read_secret(f"{key}.json_key_file", base / _string(f"{key}.json_key_file",
                                                                                entry["json_key_file"]))
    try:
        return parse_credential({k: v for k, v in body.items() if v is not None}, address=address)
    except KindError as exc:
        shown = "json_key_file" if exc.field == "json_key" else exc.field
        raise SettingsError(f"Config '{key}.{shown}' is not usable: {exc}.") from None


def _pem_file(base: Path, key: str, value: Any) -> str | None:
    if value is None:
        return None
    path = base / _string(key, value)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"Config '{key}' has value '{value}'. Cannot read it: {exc}.") from None
    if key.endswith("client_key"):
        return text
    # Only the certificate blocks: a combined cert+key file must not put the
    # key where certificates are shown back (API, status page).
    try:
        return "".join(cert.pem for cert in parse_bundle(text))
    except ValueError as exc:
        raise SettingsError(f"Config '{key}' has value '{value}'. {exc}.") from None


def _check_tls(key: str, ca_cert: str | None, client_cert: str | None, client_key: str | None) -> None:
    if (client_cert is None) != (client_key is None):
        raise SettingsError(f"Config '{key}' sets only one of client_cert and client_key. Set both.")
    try:
        if ca_cert is not None:
            parse_bundle(ca_cert)
        if client_cert is not None and client_key is not None:
            check_client_pair(client_cert, client_key)
    except ValueError as exc:
        raise SettingsError(f"Config '{key}' has unusable TLS files: {exc}.") from None


def _read_secret(key: str, path: Path) -> str:
    try:
        return path.read_text().rstrip("\r\n")
    except OSError as exc:
        raise SettingsError(f"Config '{key}' has value '{path}'. Cannot read it: {exc.strerror}.") from None


def _address(key: str, value: Any) -> str:
    try:
        return parse_address(_string(key, value))
    except InvalidReference as exc:
        raise SettingsError(f"Config '{key}' has value '{value}'. Not a registry address: {exc}.") from None


def _mapping(key: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SettingsError(f"Config '{key}' has value '{value}'. Not a mapping.")
    return value


def _string(key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise SettingsError(f"Config '{key}' has value '{value}'. Not a string.")
    return str(value)


def _optional_string(key: str, value: Any) -> str | None:
    return None if value is None else _string(key, value)


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
        return value.lower() in ("true", "yes")
    raise SettingsError(f"Config '{key}' has value '{value}'. Not a valid bool.")


def _size(key: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
    unit = match[2].lower() if match else None
    if match is None or unit not in _SIZE_UNITS or isinstance(value, bool):
        raise SettingsError(f"Config '{key}' has value '{value}'. Not a valid size (e.g. 512MiB, 20GiB).")
    return int(float(match[1]) * _SIZE_UNITS[unit])


def _duration(key: str, value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*", str(value))
    if match is None or isinstance(value, bool):
        raise SettingsError(f"Config '{key}' has value '{value}'. Not a valid duration (e.g. 30s, 5m, 12h, 7d).")
    return float(match[1]) * _DURATION_UNITS[match[2]]
