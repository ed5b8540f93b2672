"""Composition root: build the application from settings."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator

from aiohttp import web

from proxy.api.accesslog import AccessLogger
from proxy.api.admin import PREFIX, admin_app
from proxy.api.admin_cache import VERIFIER, CacheVerifier
from proxy.api.connections import ConnectionPolice, PolicedRunner, default_max_connections
from proxy.api.health import setup_health_routes
from proxy.api.listeners import split_listeners
from proxy.api.metrics import new_observer, setup_metrics_routes, state_collector
from proxy.api.pullauth import PULL_AUTH, PullAuth
from proxy.api.pulltokens import TokenSigner
from proxy.api.state import ADMIN_TOKEN, LIVE, OBSERVER, SERVICES, SETTINGS, Services
from proxy.api.status import setup_status_routes
from proxy.api.v2 import registry_app, setup_token_route
from proxy.config.runtime import SETTING_DEFAULTS
from proxy.config.settings import Settings, SettingsError
from proxy.directory import LiveState
from proxy.postgres.pool import PgUnavailable
from proxy.pullthrough.blobs import BlobService
from proxy.pullthrough.clearances import Clearances
from proxy.pullthrough.manifests import ManifestService
from proxy.pullthrough.referrers import ReferrersService
from proxy.pullthrough.routing import Router
from proxy.storage.choose import open_storage
from proxy.store.admin_token import resolve_admin_token
from proxy.store.choose import state_database
from proxy.store.credentials import RegistryStore
from proxy.store.crypto import KEY_ENV, KeyMissing, SecretBox, SecretError, key_origin, load_key
from proxy.store.db import Database
from proxy.store.environments import EnvironmentStore
from proxy.store.runtime_settings import SettingsStore
from proxy.store.sealed import key_missing_error, sealed_secrets, wrong_key_error
from proxy.store.upstreams import UpstreamStore
from proxy.upstream.breaker import Breakers
from proxy.upstream.client import UpstreamClient
from proxy.upstream.pools import Timeouts, open_pools
from proxy.upstream.tls import TlsContexts

__all__ = ["admin_token_origin", "create_app", "create_runner"]

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[split_listeners])
    app[SETTINGS] = settings
    app[OBSERVER] = new_observer(app)
    app.cleanup_ctx.append(_state)
    app.cleanup_ctx.append(_services)
    app.cleanup_ctx.append(_cache_verifier)
    app.add_subapp("/v2", registry_app())
    setup_token_route(app)
    app.add_subapp(PREFIX, admin_app())
    setup_metrics_routes(app)
    setup_health_routes(app)
    setup_status_routes(app)
    return app


def create_runner(settings: Settings) -> PolicedRunner:
    """The runner ``serve`` starts, with ``runner.site(sock)`` for each listener; signals are the command line's."""
    limits = settings.server
    police = ConnectionPolice(header_timeout=limits.header_timeout,
                              max_connections=limits.max_connections or default_max_connections())
    return PolicedRunner(create_app(settings), police=police, keepalive_timeout=limits.keepalive_timeout,
                         access_log_class=AccessLogger)


def admin_token_origin(app: web.Application) -> str:
    """Where the started app took its admin token from: a file or the variable, never the token."""
    return app[ADMIN_TOKEN].origin


async def _state(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    shared = settings.state.url is not None
    db = state_database(settings.data_dir, settings.state.url)
    try:
        try:
            await db.open()
        except PgUnavailable as exc:
            raise SettingsError(f"Config 'state.url': {exc}") from None
        secret_key = await _secret_key(settings, db, shared=shared)
        box = SecretBox(secret_key)
        live = LiveState(registries=RegistryStore(db, box), settings=SettingsStore(db, SETTING_DEFAULTS),
                         upstreams=UpstreamStore(db, box), environments=EnvironmentStore(db),
                         configs=settings.registries)
        await live.environments.sync_config(settings.environments)
        await live.registries.sync_config(settings.credentials)
        await live.settings.seed({name: settings.file_settings.get(name) for name in SETTING_DEFAULTS})
        await live.reload()
        for warning in live.setting_warnings():
            log.warning("%s", warning)
        app[LIVE] = live
        app[PULL_AUTH] = PullAuth(live, TokenSigner(secret_key), app[OBSERVER], external_url=settings.external_url,
                                  trusted_proxies=settings.trusted_proxies)
        token = await asyncio.to_thread(resolve_admin_token, settings.admin_token_file, settings.data_dir,
                                        os.environ, generate=not shared)
        app[ADMIN_TOKEN] = token
        log.info("state in %s %s", "PostgreSQL at" if shared else "SQLite file", db.description)
        log.info("admin API token %s %s", "generated into" if token.generated else "read from", token.origin)
        # Renews minted credentials (ECR, GCR) ahead of expiry even when nobody pulls.
        background = [asyncio.create_task(live.minted.run()), asyncio.create_task(live.run_key_use_flusher()),
                      asyncio.create_task(_follow(db, live))]
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await live.minted.aclose()
            await live.flush_key_use()
    finally:
        await db.close()


async def _follow(db: Database, live: LiveState) -> None:
    """Reload the live state when another replica changed the database; a burst of changes makes one reload."""
    changed = asyncio.Event()
    watcher = asyncio.create_task(db.watch(changed.set))
    try:
        while True:
            await changed.wait()
            changed.clear()
            try:
                # Through change(): under the lock the admin API's writes hold, so reloads never interleave.
                await live.change(_nothing)
            except Exception as exc:  # noqa: BLE001 - the database away, say: the listener reports its return
                log.warning("state not reloaded after a change on another replica (again in 1 s): %s", exc)
                await asyncio.sleep(1.0)
                changed.set()
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


async def _nothing() -> None:
    return None


async def _secret_key(settings: Settings, db: Database, *, shared: bool) -> bytes:
    """The key that opens every secret in the store; a new one only for a store of this process's own that holds
    none: replicas sharing a store must share the key, so they never make one."""
    sealed = await db.read(sealed_secrets)
    try:
        key = await asyncio.to_thread(load_key, settings.key_file, os.environ, create=not sealed and not shared)
    except KeyMissing as exc:
        if shared:
            raise SecretError(f"state.url is set, so every replica must use one secret key: set ${KEY_ENV} (base64 "
                              f"of 32 bytes) or secrets.key_file (from the same Secret on each); none is generated "
                              f"({exc}).") from None
        raise key_missing_error(str(exc), len(sealed), db.description) from None
    box = SecretBox(key)
    unreadable = [secret for secret in sealed if not box.opens(secret.sealed, secret.context)]
    if unreadable:
        raise wrong_key_error(key_origin(settings.key_file, os.environ), len(unreadable), db.description)
    return key


async def _services(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    live = app[LIVE]
    storage = await open_storage(settings)
    try:
        limits = settings.upstream
        timeouts = Timeouts(connect=limits.connect_timeout, response=limits.response_timeout, idle=limits.idle_timeout)
        pools = open_pools(timeouts)
        upstream = UpstreamClient(pools=pools, registries=live, tls=TlsContexts(settings.data_dir / "run"),
                                  observer=app[OBSERVER], timeouts=timeouts,
                                  breakers=Breakers(threshold=limits.failures_before_pause, cooldown=limits.pause))
        clearances = Clearances(ttl=settings.cache.tag_ttl, on_refused=app[OBSERVER].isolation_refusal)
        services = Services(
            router=Router(lambda: live.policy),
            upstream=upstream,
            blobs=BlobService(storage=storage, upstream=upstream, clearances=clearances),
            manifests=ManifestService(storage=storage, upstream=upstream, cache=settings.cache, clearances=clearances),
            referrers=ReferrersService(storage=storage, upstream=upstream, cache=settings.cache, clearances=clearances),
            storage=storage,
        )
        app[SERVICES] = services
        app[OBSERVER].add_collector(state_collector(app))
    except BaseException:
        # Its pool, listener and janitor would outlive the start-up that failed.
        await storage.close()
        raise
    try:
        yield
    finally:
        # Downloads first: they still write to the cache and read from the pools.
        await services.blobs.aclose()
        await services.manifests.aclose()
        await services.referrers.aclose()
        await upstream.aclose()
        await pools.close()
        await storage.close()


async def _cache_verifier(app: web.Application) -> AsyncIterator[None]:
    # After the services, so a run still going on is stopped before the storage closes under it.
    verifier = CacheVerifier(app[SERVICES].storage, app[OBSERVER])
    app[VERIFIER] = verifier
    try:
        yield
    finally:
        await verifier.aclose()
