"""Loading the configuration: defaults, the YAML file, environment and flags."""

from __future__ import annotations

import functools
import json
import re
import textwrap
from pathlib import Path

import pytest
import trustme
import yaml
from proxy.config.runtime import SETTING_DEFAULTS as DEFAULTS
from proxy.config.schema import CONFIG_FILE
from proxy.config.settings import CacheSettings, RegistryConfig, Settings, SettingsError, load_settings
from proxy.credentials.kinds import CredentialInput
from proxy.credentials.schema import Group, ListOf

ROOT = Path(__file__).resolve().parents[2]
CONFIG_FILES = sorted(p for p in (ROOT / "config").rglob("*") if p.suffix in (".yaml", ".yml"))


def write(tmp_path: Path, text: str, name: str = "proxy.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path: Path, text: str, **kwargs: str) -> Settings:
    return load_settings(write(tmp_path, text), environ={}, **kwargs)


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(SettingsError) as info:
        load(tmp_path, text)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_without_a_file() -> None:
    settings = load_settings(None, environ={})
    assert settings.listen == "127.0.0.1:5000"
    assert (settings.listen_host, settings.listen_port) == ("127.0.0.1", 5000)
    assert settings.data_dir == Path("./data")
    assert settings.file_settings == {}
    assert settings.registries == {}
    assert settings.log_level == "info"
    assert settings.cache == CacheSettings(max_size=20 * 1024**3, tag_ttl=300.0, max_stale=7 * 86400.0,
                                           max_manifest_size=4 * 1024**2)


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load(tmp_path, "") == load_settings(None, environ={})


def test_a_full_file(tmp_path: Path) -> None:
    secret = write(tmp_path, "s3cret\n", "secret.txt")
    settings = load(tmp_path, f"""
        listen: 0.0.0.0:6000
        data_dir: {tmp_path / "cache"}
        settings:
          registry.default: quay.io
          registry.whitelist: "quay.io, index.docker.io,ghcr.io"
        cache: {{max_size: 512MiB, tag_ttl: 30s, max_stale: 12h, max_manifest_size: 1MB}}
        log: {{level: DEBUG}}
        registries:
          - address: registry.example.com:5000
            username: robot
            password_file: {secret}
            email: ops@example.com
            endpoint: https://mirror.example.com:8443/
            insecure: true
          - address: ghcr.io
            username: me
            password: token
    """)
    assert settings.listen == "0.0.0.0:6000"
    assert settings.data_dir == tmp_path / "cache"
    assert settings.file_settings == {"registry.default": "quay.io", "registry.whitelist": "docker.io, ghcr.io, quay.io"}
    assert settings.cache == CacheSettings(512 * 1024**2, 30.0, 12 * 3600.0, 1_000_000)
    assert settings.log_level == "debug"
    assert settings.registries == {
        "registry.example.com:5000": RegistryConfig(
            "registry.example.com:5000", "https://mirror.example.com:8443", True,
            credential=CredentialInput("basic", "ops@example.com", "robot", "s3cret", {})),
        "ghcr.io": RegistryConfig("ghcr.io", credential=CredentialInput("basic", "", "me", "token", {})),
    }


@pytest.mark.parametrize("block", [
    "settings:\n  registry:\n    default: quay.io\n    whitelist: quay.io\n",
    "settings:\n  registry.default: quay.io\n  registry.whitelist: quay.io\n",
    "settings:\n  registry.default: quay.io\n  registry:\n    whitelist: quay.io\n",
])
def test_nested_and_dotted_settings_forms(tmp_path: Path, block: str) -> None:
    settings = load(tmp_path, block)
    assert settings.file_settings == {"registry.default": "quay.io", "registry.whitelist": "quay.io"}


@pytest.mark.parametrize(("value", "expected"), [
    ("1024", 1024), ("1000", 1000), ("10k", 10_000), ("10KiB", 10_240), ("512MiB", 512 * 1024**2),
    ("1.5GB", 1_500_000_000), ("20GiB", 20 * 1024**3), ("2 TiB", 2 * 1024**4), ("0", 0), ("7b", 7),
])
def test_sizes(tmp_path: Path, value: str, expected: int) -> None:
    assert load(tmp_path, f"cache: {{max_size: {value}}}").cache.max_size == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("90", 90.0), ("30s", 30.0), ("5m", 300.0), ("12h", 43200.0), ("7d", 604800.0), ("1.5m", 90.0), ("0", 0.0),
])
def test_durations(tmp_path: Path, value: str, expected: float) -> None:
    assert load(tmp_path, f"cache: {{tag_ttl: {value}}}").cache.tag_ttl == expected


@pytest.mark.parametrize(("value", "host", "port"), [
    ("0.0.0.0:5000", "0.0.0.0", 5000), ("[::]:5001", "::", 5001), ("[::1]:80", "::1", 80),
    ("localhost:8080", "localhost", 8080), (":5002", "0.0.0.0", 5002),
])
def test_listen_forms(value: str, host: str, port: int) -> None:
    settings = load_settings(None, listen=value, environ={})
    assert (settings.listen_host, settings.listen_port) == (host, port)


def test_environment_overrides_the_file_and_flags_override_both(tmp_path: Path) -> None:
    path = write(tmp_path, f"listen: 127.0.0.1:7000\ndata_dir: {tmp_path / 'file'}\n")
    env = {"REGISTRY_PROXY_LISTEN": "127.0.0.1:7001", "REGISTRY_PROXY_DATA_DIR": str(tmp_path / "env")}
    from_env = load_settings(path, environ=env)
    assert (from_env.listen, from_env.data_dir) == ("127.0.0.1:7001", tmp_path / "env")
    from_flags = load_settings(path, environ=env, listen="127.0.0.1:7002", data_dir=str(tmp_path / "flag"))
    assert (from_flags.listen, from_flags.data_dir) == ("127.0.0.1:7002", tmp_path / "flag")
    assert load_settings(path, environ={"REGISTRY_PROXY_LISTEN": ""}).listen == "127.0.0.1:7000"


def test_environment_applies_without_a_file() -> None:
    settings = load_settings(None, environ={"REGISTRY_PROXY_LISTEN": "0.0.0.0:9000"})
    assert settings.listen == "0.0.0.0:9000"


@pytest.mark.parametrize("source", ["file", "env", "flag"])
def test_relative_data_dir_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    # config/registry-proxy.yaml: "Relative paths here are relative to the working directory."
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    path = write(tmp_path / "etc", "data_dir: ./data\n" if source == "file" else "")
    env = {"REGISTRY_PROXY_DATA_DIR": "./data"} if source == "env" else {}
    flag = "./data" if source == "flag" else None
    settings = load_settings(path, environ=env, data_dir=flag)
    assert settings.data_dir.resolve() == workdir / "data"


def test_later_registries_entry_for_the_same_address_wins(tmp_path: Path) -> None:
    settings = load(tmp_path, """
        registries:
          - {address: index.docker.io, username: old, password: a}
          - {address: quay.io, endpoint: "https://mirror.example.com"}
          - {address: docker.io, username: new, password: b}
    """)
    assert settings.registries["docker.io"] == RegistryConfig(
        "docker.io", credential=CredentialInput("basic", "", "new", "b", {}))
    assert set(settings.registries) == {"docker.io", "quay.io"}


def test_an_alias_is_read_and_puts_the_registry_under_the_file(tmp_path: Path) -> None:
    settings = load(tmp_path, """
        registries:
          - {address: "registry.example.com:5000", alias: example}
          - {address: "10.0.0.5:5000", alias: lab_2, username: u, password: p}
    """)
    assert settings.registries["registry.example.com:5000"] == RegistryConfig("registry.example.com:5000",
                                                                              alias="example")
    assert settings.registries["10.0.0.5:5000"].alias == "lab_2"
    # The file names the registry; `upstreams set` may not rename it.
    assert settings.registries["registry.example.com:5000"].sets_upstream


@pytest.mark.parametrize(("text", "needles"), [
    ("registries: [{address: quay.io, alias: q.io}]",
     ["Config 'registries[0].alias' has value 'q.io'. Not usable as an alias", "dot or a colon"]),
    ("registries: [{address: quay.io, alias: Quay}]", ["'registries[0].alias'", "use lowercase: 'quay'"]),
    ("registries: [{address: quay.io, alias: library}]", ["'registries[0].alias'", "Docker Hub's namespace"]),
    ("registries: [{address: quay.io, alias: [a]}]", ["'registries[0].alias'", "Not a string"]),
    ("registries: [{address: 'a.io:1', alias: x}, {address: b.io, alias: y}, {address: 'c.io:2', alias: x}]",
     ["Config 'registries[2].alias' has value 'x'. registries[0] (a.io:1) has it already"]),
])
def test_alias_errors_name_the_key(tmp_path: Path, text: str, needles: list[str]) -> None:
    message = error(tmp_path, text)
    for needle in needles:
        assert needle in message, message


def test_one_alias_on_two_entries_for_one_address_is_no_clash(tmp_path: Path) -> None:
    settings = load(tmp_path, """
        registries:
          - {address: "a.io:1", alias: x}
          - {address: "a.io:1", alias: x, username: u, password: p}
    """)
    assert settings.registries["a.io:1"].alias == "x"


def test_a_username_without_a_password_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"'registries\[0\]\.password'.*password is required"):
        load(tmp_path, "registries: [{address: quay.io, username: q}]")


def test_password_is_not_shown_in_repr(tmp_path: Path) -> None:
    settings = load(tmp_path, "registries: [{address: quay.io, username: u, password: hunter2}]")
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize(("text", "needles"), [
    ("lisen: 0.0.0.0:5000", ["'lisen'", "not a known key", "listen"]),
    ("cache: {maxsize: 1GiB}", ["'cache.maxsize'", "max_size"]),
    ("settings: {registry.defualt: quay.io}", ["'settings.registry.defualt'", "registry.default"]),
    ("settings: {registry: {defualt: quay.io}}", ["'settings.registry.defualt'"]),
    ("registries: [{address: quay.io, user: x}]", ["'registries[0].user'", "username"]),
    ("log: {lvl: debug}", ["'log.lvl'"]),
    ("listen: [1, 2]", ["'listen'", "[1, 2]", "Not a string"]),
    ("cache: 5", ["'cache'", "'5'", "Not a mapping"]),
    ("registries: {address: quay.io}", ["'registries'", "Not a list"]),
    ("registries: [{address: quay.io, insecure: maybe}]", ["'registries[0].insecure'", "'maybe'"]),
    ("registries: [{username: x}]", ["'registries[0].address'", "missing"]),
    ("registries: [{address: 'https://quay.io'}]",
     ["Config 'registries[0].address' has value 'https://quay.io'. Not a registry address: "
      "drop the scheme: use `quay.io` instead of `https://quay.io`."]),
    ("settings: {registry.default: 'https://quay.io/'}", ["'settings.registry.default'", "drop the scheme"]),
    ("settings: {registry.whitelist: 'quay.io, Ghcr.io'}", ["'settings.registry.whitelist'", "ghcr.io"]),
    ("cache: {max_size: 10XB}", ["'cache.max_size'", "'10XB'", "size"]),
    ("cache: {max_size: -1}", ["'cache.max_size'", "'-1'"]),
    ("cache: {max_manifest_size: true}", ["'cache.max_manifest_size'", "'True'"]),
    ("cache: {tag_ttl: 1w}", ["'cache.tag_ttl'", "'1w'", "duration"]),
    ("cache: {max_stale: -5}", ["'cache.max_stale'", "'-5'"]),
    ("cache: {tag_ttl: 5 minutes}", ["'cache.tag_ttl'", "'5 minutes'"]),
    ("listen: localhost", ["'listen'", "'localhost'", "host:port"]),
    ("listen: 127.0.0.1:99999", ["'listen'", "'127.0.0.1:99999'"]),
    ("log: {level: verbose}", ["'log.level'", "'verbose'"]),
    ("registries: [{address: quay.io, endpoint: 'https://mirror.example.com/v2'}]",
     ["'registries[0].endpoint'", "'https://mirror.example.com/v2'", "without a path"]),
    ("registries: [{address: quay.io, endpoint: mirror.example.com}]",
     ["'registries[0].endpoint'", "'mirror.example.com'"]),
    ("registries: [{address: quay.io, endpoint: 'ftp://mirror.example.com'}]", ["'registries[0].endpoint'"]),
    ("registries: [{address: quay.io, password: a, password_file: /x}]",
     ["'registries[0]'", "password", "password_file"]),
    ("registries: [{address: ok.io}, {address: 'quay.io/org'}]",
     ["'registries[1].address'", "drop the path: use `quay.io`"]),
])
def test_errors_are_one_line_naming_key_and_value(tmp_path: Path, text: str, needles: list[str]) -> None:
    message = error(tmp_path, text)
    for needle in needles:
        assert needle in message


def test_missing_password_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    message = error(tmp_path, f"registries: [{{address: quay.io, password_file: {missing}}}]")
    assert "'registries[0].password_file'" in message and str(missing) in message


@pytest.mark.parametrize(("text", "needle"), [
    ("listen: [unclosed", "not valid YAML at line"), ("- a\n- b\n", "must hold a mapping"),
])
def test_unreadable_files(tmp_path: Path, text: str, needle: str) -> None:
    assert needle in error(tmp_path, text)


def test_missing_file() -> None:
    with pytest.raises(SettingsError, match="cannot be read"):
        load_settings(Path("/nonexistent/registry-proxy.yaml"), environ={})


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_config_file_loads(path: Path, tmp_path: Path) -> None:
    # The examples name secret and certificate files on a real host; stand-ins
    # of the right kind take their place, so everything else is checked as is.
    raw = yaml.safe_load(path.read_text())
    for entry in raw.get("registries") or []:
        for key, value in list(entry.items()):
            if key.endswith("_file") or key in ("ca_cert", "client_cert", "client_key"):
                entry[key] = str(_stand_in(tmp_path, key, value))
    for key in ("cert_file", "key_file"):
        if key in (raw.get("tls") or {}):
            raw["tls"][key] = str(_stand_in(tmp_path, f"server_{key}", raw["tls"][key]))
    copy = tmp_path / path.name
    copy.write_text(yaml.safe_dump(raw))
    assert isinstance(load_settings(copy, environ={}), Settings)


@functools.cache
def _pki() -> tuple[trustme.CA, trustme.LeafCert]:
    ca = trustme.CA()
    return ca, ca.issue_cert("registry.example.com")


def _stand_in(tmp_path: Path, key: str, original: str) -> Path:
    ca, pair = _pki()
    content = {
        "ca_cert": ca.cert_pem.bytes(), "client_cert": pair.cert_chain_pems[0].bytes(),
        "client_key": pair.private_key_pem.bytes(), "server_cert_file": pair.cert_chain_pems[0].bytes(),
        "server_key_file": pair.private_key_pem.bytes(),
        "json_key_file": json.dumps({"type": "service_account", "client_email": "a@b.iam.gserviceaccount.com",
                                     "private_key": "-----BEGIN PRIVATE KEY-----", "token_uri": "https://x"}).encode(),
    }.get(key, b"a-secret\n")
    path = tmp_path / f"{key}-{Path(original).name}"
    path.write_bytes(content)
    return path


def test_example_config_states_the_embedded_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    example = load_settings(ROOT / "config" / "registry-proxy.yaml", environ={})
    defaults = load_settings(None, environ={})
    assert example.data_dir.resolve() == defaults.data_dir.resolve()
    # The run-time settings' defaults are the store's: the file states them for that store.
    assert example.file_settings == DEFAULTS
    assert (example.listen, example.cache, example.registries, example.log_level, example.log_format,
            example.status_public, example.metrics_public, example.admin_token_file, example.secret_key_file,
            example.tls) == (defaults.listen, defaults.cache, defaults.registries, defaults.log_level,
                             defaults.log_format, defaults.status_public, defaults.metrics_public,
                             defaults.admin_token_file, defaults.secret_key_file, defaults.tls)


_KEY_LINE = re.compile(r"(?P<lead> *)(?P<item>- )?(?P<key>[a-z_][a-z0-9_.]*):(?:\s|$)")


def _keys_written(text: str) -> set[str]:
    """The dotted path of every key the file sets or shows commented out (`#  key: value`).

    Each comment marker (`# `) is dropped before the indentation is counted,
    so a commented-out key sits where it would once uncommented. List items
    are `name[].key`.
    """
    paths: set[str] = set()
    parents: list[tuple[int, str]] = []  # (indentation, path) of the keys this line may sit under
    for line in text.splitlines():
        match = _KEY_LINE.match(re.sub(r"#( |$)", "", line))
        if match is None:
            continue
        indent = len(match["lead"])
        while parents and parents[-1][0] >= indent:
            parents.pop()
        prefix = parents[-1][1] if parents else ""
        if match["item"]:
            prefix = f"{prefix}[]"
            parents.append((indent, prefix))
            indent += 2
        path = f"{prefix}.{match['key']}" if prefix else match["key"]
        paths.add(path)
        parents.append((indent, path))
    return paths


def _keys_declared(group: Group, prefix: str = "") -> set[str]:
    paths = set()
    for member in group.members:
        path = f"{prefix}{member.name}"
        paths.add(path)
        if isinstance(member, Group):
            paths |= _keys_declared(member, f"{path}.")
        elif isinstance(member, ListOf):
            paths |= _keys_declared(member.item, f"{path}[].")
    return paths


def test_example_config_names_every_key_where_it_belongs() -> None:
    # Set or shown in a comment, at its place in the tree: the file is where an operator looks keys up.
    written = _keys_written((ROOT / "config" / "registry-proxy.yaml").read_text())
    declared = _keys_declared(CONFIG_FILE)
    # Not the other way round: prose in a comment may look like a key.
    assert sorted(declared - written) == [], "keys the parser knows that config/registry-proxy.yaml does not show"


def test_the_key_check_sees_a_key_at_the_wrong_place() -> None:
    # secrets.key_file missing, and tls.key_file must not stand in for it.
    text = "tls: {}\n#  key_file: /tls.key\nsecrets: {}\n#  # no key here\n"
    assert _keys_written(text) == {"tls", "tls.key_file", "secrets"}
    items = "registries: []\n#  - address: a\n#    # password: x\n#    username: u\nlog:\n  format: text\n"
    assert _keys_written(items) == {"registries", "registries[].address", "registries[].password",
                                    "registries[].username", "log", "log.format"}
