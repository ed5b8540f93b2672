"""Where each registry lives and which credentials it gets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from proxy.reference import DOCKER_HUB
from proxy.settings import RegistryConfig

__all__ = ["Credentials", "Endpoint", "RegistryDirectory", "StaticRegistries"]

DOCKER_HUB_API = "https://registry-1.docker.io"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    # Stable identity for cache keys; never the secret itself.
    id: str = ""


@dataclass(frozen=True)
class Endpoint:
    registry: str
    url: str
    configured: bool
    insecure: bool = False

    @property
    def plain_http_url(self) -> str | None:
        """docker's insecure-registries semantics: HTTPS unverified, then plain HTTP."""
        if self.insecure and self.url.startswith("https://"):
            return "http://" + self.url[len("https://"):]
        return None


class RegistryDirectory(Protocol):
    def endpoint(self, registry: str) -> Endpoint: ...

    def credentials(self, registry: str) -> Credentials | None: ...


class StaticRegistries:
    """Registries as the config file names them."""

    def __init__(self, configs: Mapping[str, RegistryConfig]) -> None:
        self._configs = dict(configs)

    def endpoint(self, registry: str) -> Endpoint:
        config = self._configs.get(registry)
        default = DOCKER_HUB_API if registry == DOCKER_HUB else f"https://{registry}"
        if config is None:
            return Endpoint(registry, default, configured=False)
        return Endpoint(registry, config.endpoint or default, configured=True, insecure=config.insecure)

    def credentials(self, registry: str) -> Credentials | None:
        config = self._configs.get(registry)
        if config is None or config.username is None or config.password is None:
            return None
        return Credentials(config.username, config.password, id=f"config:{registry}")
