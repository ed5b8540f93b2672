"""Typed application state shared by the handlers."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from proxy.api.observer import Observer
from proxy.api.pulltokens import Identity
from proxy.config.settings import Settings
from proxy.directory import LiveState
from proxy.pullthrough.blobs import BlobService
from proxy.pullthrough.manifests import ManifestService
from proxy.pullthrough.referrers import ReferrersService
from proxy.pullthrough.routing import Router
from proxy.storage.base import Storage
from proxy.store.admin_token import AdminToken
from proxy.upstream.client import UpstreamClient

__all__ = ["ADMIN_TOKEN", "IDENTITY", "LIVE", "OBSERVER", "SERVICES", "SENT_BY_SENDFILE", "SETTINGS", "Services"]


@dataclass(frozen=True)
class Services:
    router: Router
    upstream: UpstreamClient
    blobs: BlobService
    manifests: ManifestService
    referrers: ReferrersService
    storage: Storage


SETTINGS = web.AppKey("settings", Settings)
SERVICES = web.AppKey("services", Services)
LIVE = web.AppKey("live", LiveState)
ADMIN_TOKEN = web.AppKey("admin_token", AdminToken)
OBSERVER = web.AppKey("observer", Observer)
# Set by the /v2 sub-application on every request it lets through; read by handlers and the access log.
IDENTITY = web.RequestKey("identity", Identity)
# Body bytes a response sent by sendfile, which aiohttp's own count of bytes on the wire misses.
SENT_BY_SENDFILE = web.RequestKey("sent_by_sendfile", int)
