"""Where each registry lives, which credentials it gets, and whom the client tells how it went.

The client asks these through protocols; the run-time directory and the
metrics implement them, so this package imports neither."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from proxy.upstream.tls import TlsOptions

__all__ = ["DOCKER_HUB_API", "Credentials", "Endpoint", "EndpointKind", "RegistryDirectory", "UpstreamEvents"]

DOCKER_HUB_API = "https://registry-1.docker.io"


class EndpointKind(enum.Enum):
    """Which registry API endpoint a request is for: it decides error codes and metric labels."""

    BASE = "base"
    BLOB = "blob"
    MANIFEST = "manifest"
    TAGS = "tags"
    REFERRERS = "referrers"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    # Stable identity for cache keys; never the secret itself.
    id: str = ""
    # Minted by a provider (ECR, GCR): a refusal may just mean it went stale.
    minted: bool = False
    # How the operator knows it, for messages: "credential 3 (user alice)". Never the secret.
    name: str = ""


@dataclass(frozen=True)
class Endpoint:
    registry: str
    url: str
    configured: bool
    insecure: bool = False
    tls: TlsOptions = TlsOptions()
    # Token realms (origins) the operator named as the registry's own: they may get its credentials.
    token_realms: tuple[str, ...] = ()

    @property
    def plain_http_url(self) -> str | None:
        """docker's insecure-registries semantics: HTTPS unverified, then plain HTTP."""
        if self.insecure and self.url.startswith("https://"):
            return "http://" + self.url[len("https://"):]
        return None


class RegistryDirectory(Protocol):
    def endpoint(self, registry: str) -> Endpoint: ...

    def credential_id(self, environment: str, registry: str) -> str:
        """Which credential the environment's pulls use now ("" for none): stable across renewals."""
        ...

    async def credentials(self, environment: str, registry: str) -> Credentials | None: ...

    async def renew_credentials(self, environment: str, registry: str) -> Credentials | None:
        """A fresh mint after the upstream refused minted credentials; None if not possible."""
        ...

    def credential_note(self, environment: str, registry: str) -> str | None:
        """Why there are no credentials although some exist (e.g. deactivated)."""
        ...


class UpstreamEvents(Protocol):
    """What the client reports about each upstream, for metrics and the status page."""

    def upstream_answered(self, registry: str, status: int, seconds: float, ratelimit: str | None) -> None: ...

    def upstream_failed(self, registry: str, message: str, *, endpoint: str | None = None) -> None:
        """The upstream failed (unreachable, TLS, a timeout, 5xx, refused credentials, 429); ``endpoint`` is its URL."""
        ...

    def upstream_blocked(self, registry: str, policy: str, message: str) -> None:
        """A request ``policy`` (the SSRF guard) kept from being sent: the upstream was never contacted."""
        ...
