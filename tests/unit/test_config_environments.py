"""The config file's environments, pull keys, credentials by environment, admin.listen and external_url."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from proxy.config.environments import EnvironmentConfig, KeyConfig
from proxy.config.settings import Settings, SettingsError, load_settings

SECRET = "s3cret-pull-key-0123456789"


def load(tmp_path: Path, text: str) -> Settings:
    (tmp_path / "team-a.key").write_text(SECRET + "\n")
    (tmp_path / "short.key").write_text("short\n")
    path = tmp_path / "proxy.yaml"
    path.write_text(textwrap.dedent(text).replace("DIR", str(tmp_path)))
    return load_settings(path, environ={})


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(SettingsError) as info:
        load(tmp_path, text)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_environments_with_keys_and_credentials(tmp_path: Path) -> None:
    settings = load(tmp_path, """
        environments:
          - name: default
            anonymous_pull: no
          - name: team-a
            anonymous_pull: yes
            anonymous_from: "10.0.0.0/8, 192.168.1.7"
            keys:
              - id: team-a-ci
                secret_file: DIR/team-a.key
        registries:
          - address: quay.io
            username: shared
            password: one
          - address: quay.io
            environment: team-a
            username: robot
            password: two
        admin:
          listen: 127.0.0.1:5001
        external_url: https://proxy.example.com/
    """)
    assert settings.environments == {
        "default": EnvironmentConfig("default", False),
        "team-a": EnvironmentConfig("team-a", True, ("10.0.0.0/8", "192.168.1.7/32"), (KeyConfig("team-a-ci", SECRET),)),
    }
    assert settings.credentials[("default", "quay.io")].username == "shared"
    assert settings.credentials[("team-a", "quay.io")].username == "robot"
    assert settings.credentials[("team-a", "quay.io")].environment == "team-a"
    assert settings.admin_listen == ("127.0.0.1", 5001)
    assert settings.external_url == "https://proxy.example.com"
    assert SECRET not in repr(settings)


def test_a_declared_default_without_anonymous_pull_keeps_it_on(tmp_path: Path) -> None:
    assert load(tmp_path, "environments: [{name: default}]").environments["default"].anonymous_pull
    assert not load(tmp_path, "environments: [{name: team-b}]").environments["team-b"].anonymous_pull


@pytest.mark.parametrize(("text", "needles"), [
    ("environments: [{name: Team_A}]", ["environments[0].name", "Team_A", "lowercase"]),
    ("environments: [{name: a}, {name: a}]", ["environments[1].name", "declared twice"]),
    ("environments: [{anonymous_pull: yes}]", ["environments[0].name", "missing"]),
    ("environments: [{name: a, anonymous_from: [10.0.0.0/33]}]", ["environments[0].anonymous_from", "10.0.0.0/33"]),
    ("environments: [{name: a, keys: [{id: key1}]}]", ["environments[0].keys[0].secret_file", "missing"]),
    ("environments: [{name: a, keys: [{id: x, secret_file: DIR/team-a.key}]}]", ["keys[0].id", "'x'"]),
    ("environments: [{name: a, keys: [{id: key1, secret_file: DIR/short.key}]}]", ["secret_file", "shorter than 16"]),
    ("environments: [{name: a, keys: [{id: key1, secret_file: DIR/none.key}]}]", ["secret_file", "none.key"]),
    ("environments: [{name: a, keys: [{id: key1, secret_file: DIR/team-a.key}]},"
     " {name: b, keys: [{id: key1, secret_file: DIR/team-a.key}]}]", ["environments[1].keys[0].id", "unique"]),
    ("registries: [{address: quay.io, environment: team-z, username: u, password: p}]", ["team-z", "environments"]),
    ("registries: [{address: quay.io, environment: team-a, endpoint: 'http://x'}]",
     ["registries[0].environment", "no credential"]),
    ("admin: {listen: '127.0.0.1:5000'}", ["admin.listen", "port of its own"]),
    ("admin: {listen: '127.0.0.1:0'}", ["admin.listen", "port of its own"]),
    ("external_url: proxy.example.com", ["external_url", "proxy.example.com"]),
])
def test_environment_errors_name_the_key(tmp_path: Path, text: str, needles: list[str]) -> None:
    message = error(tmp_path, text)
    for needle in needles:
        assert needle in message, message
    assert SECRET not in message
