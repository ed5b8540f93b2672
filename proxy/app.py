"""Composition root: build the application from settings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from proxy.api.errors import add_api_version, registry_errors
from proxy.api.state import SERVICES, SETTINGS, Services
from proxy.api.v2 import setup_routes
from proxy.pullthrough.blobs import BlobService
from proxy.pullthrough.manifests import ManifestService
from proxy.pullthrough.routing import Router, RoutingPolicy
from proxy.settings import Settings
from proxy.storage.content import ContentStore
from proxy.storage.index import RepositoryIndex
from proxy.storage.layout import Layout
from proxy.upstream.client import UpstreamClient
from proxy.upstream.pools import open_pools
from proxy.upstream.registries import StaticRegistries

__all__ = ["create_app"]


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[registry_errors])
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_services)
    app.on_response_prepare.append(add_api_version)
    setup_routes(app)
    return app


async def _services(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    layout = Layout(settings.data_dir)
    store = ContentStore(layout, max_size=settings.cache.max_size)
    await asyncio.to_thread(store.load)
    index = RepositoryIndex(layout)
    pools = open_pools()
    upstream = UpstreamClient(pools=pools, registries=StaticRegistries(settings.registries))
    app[SERVICES] = Services(
        router=Router(RoutingPolicy(settings.default_registry, settings.whitelist)),
        upstream=upstream,
        blobs=BlobService(store=store, index=index, upstream=upstream),
        manifests=ManifestService(store=store, index=index, upstream=upstream, cache=settings.cache),
    )
    try:
        yield
    finally:
        await pools.close()
