"""What a first day meets: `serve --help`, the quick start's files, and Docker Hub in the whitelist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from proxy.cli.main import main
from proxy.config.runtime import parse_whitelist
from proxy.errors import RegistryError
from proxy.pullthrough.routing import Router, RoutingPolicy
from proxy.reference import DOCKER_HUB

ROOT = Path(__file__).resolve().parents[2]


def _variables_the_server_reads() -> set[str]:
    # Everything outside the command line is the server's; the admin commands' own (REGISTRY_PROXY_URL) are not.
    names: set[str] = set()
    for path in (ROOT / "proxy").rglob("*.py"):
        if "cli" not in path.relative_to(ROOT / "proxy").parts:
            names |= set(re.findall(r'"(REGISTRY_PROXY_[A-Z_]+)"', path.read_text()))
    return names


def test_serve_help_describes_serve_and_lists_every_variable_it_reads(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "Run the pull-through proxy" in text
    variables = _variables_the_server_reads()
    assert {"REGISTRY_PROXY_LISTEN", "REGISTRY_PROXY_DATA_DIR", "REGISTRY_PROXY_ADMIN_TOKEN",
            "REGISTRY_PROXY_SECRET_KEY", "REGISTRY_PROXY_SECRET_KEY_FILE"} <= variables
    listed = set(re.findall(r"^  (REGISTRY_PROXY_[A-Z_]+) ", text, re.MULTILINE))
    assert listed == variables


def test_what_the_quick_start_creates_is_ignored_by_git() -> None:
    # Read from .gitignore itself: a source tree without .git (an sdist, a copy) checks it too.
    readme = (ROOT / "README.md").read_text()
    assert "python3 -m venv .venv" in readme and "`./data`" in readme and "`./data.key`" in readme
    ignored = {line.strip().strip("/") for line in (ROOT / ".gitignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", "data", "data.key"} <= ignored


@pytest.mark.parametrize("listed", ["docker.io", "index.docker.io", "registry-1.docker.io"])
def test_any_docker_hub_name_in_the_whitelist_allows_docker_hub(listed: str) -> None:
    whitelist = parse_whitelist(f"quay.io, {listed}", key="registry.whitelist")
    assert whitelist == {"quay.io", DOCKER_HUB}
    router = Router(lambda: RoutingPolicy(default_registry=DOCKER_HUB, whitelist=whitelist))
    for name in ("ubuntu", "library/ubuntu", "docker.io/library/ubuntu", "index.docker.io/library/ubuntu",
                 "registry-1.docker.io/library/ubuntu"):
        assert router.resolve(name).registry == DOCKER_HUB
    # Without any of them, Docker Hub is refused.
    router = Router(lambda: RoutingPolicy(default_registry=DOCKER_HUB, whitelist=frozenset({"quay.io"})))
    with pytest.raises(RegistryError, match="not in registry.whitelist"):
        router.resolve("ubuntu")
