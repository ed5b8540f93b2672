"""The status page (/) and its JSON twin (/status.json): health, settings, registries, cache.

Never a secret: credentials appear as id and username, minted tokens as
their timestamps and last refresh result.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from proxy import __version__
from proxy.api.auth import require_admin
from proxy.api.content_policy import NOSNIFF, new_nonce, status_page_headers
from proxy.api.health import readiness
from proxy.api.observer import OTHER, UpstreamState
from proxy.api.state import LIVE, OBSERVER, SERVICES, SETTINGS
from proxy.credentials.value_types import DEFAULT_ENVIRONMENT
from proxy.humanize import ago, human_bytes, human_duration, until
from proxy.store.environments import EnvironmentRecord

if TYPE_CHECKING:
    import jinja2

__all__ = ["contact_state", "setup_status_routes", "status_data"]


class StatusTemplate:
    """The page's Jinja template, loaded on the first view.

    Jinja is imported then, in a thread: most proxies never show the page,
    and they need not carry the template engine in memory.
    """

    def __init__(self) -> None:
        self._template: jinja2.Template | None = None

    async def render(self, context: dict[str, Any]) -> str:
        if self._template is None:
            self._template = await asyncio.to_thread(_load_template)
        return self._template.render(context)


def _load_template() -> jinja2.Template:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("proxy", "templates"), autoescape=True)
    env.filters.update(bytes=human_bytes, duration=human_duration, until=until, ago=ago)
    return env.get_template("status.html")


_TEMPLATE = web.AppKey("status_template", StatusTemplate)


def setup_status_routes(app: web.Application) -> None:
    app[_TEMPLATE] = StatusTemplate()
    app.router.add_get("/", page)
    app.router.add_get("/status.json", as_json)


async def page(request: web.Request) -> web.Response:
    _check(request)
    nonce = new_nonce()
    html = await request.config_dict[_TEMPLATE].render({**await status_data(request.app), "style_nonce": nonce})
    return web.Response(text=html, content_type="text/html", headers=status_page_headers(nonce))


async def as_json(request: web.Request) -> web.Response:
    _check(request)
    return web.json_response(await status_data(request.app), headers=NOSNIFF)


def _check(request: web.Request) -> None:
    if not request.config_dict[SETTINGS].status_public:
        require_admin(request, realm_basic=True)


async def status_data(app: web.Application) -> dict[str, Any]:
    settings, live, observer, services = app[SETTINGS], app[LIVE], app[OBSERVER], app[SERVICES]
    now = time.time()
    checks = await readiness(app)
    stats = services.storage.stats()
    hits, misses = observer.total(observer.cache_hits), observer.total(observer.cache_misses)
    answered = hits + misses
    return {
        "version": __version__,
        "started": observer.started,
        "uptime_seconds": now - observer.started,
        "listen": settings.listen,
        "tls": settings.tls is not None,
        "ready": all(value == "ok" for value in checks.values()),
        "checks": checks,
        "settings": {name: {"value": value.value, "source": value.source} for name, value in live.values.items()},
        "environments": [_environment(app, env, now) for env in live.envs.values()],
        "cache": {
            "used_bytes": stats.used, "max_bytes": stats.max_size,
            "blobs": stats.blobs, "manifests": stats.manifests,
            "hits": hits, "misses": misses,
            "hit_ratio": hits / answered if answered else None,
            "evictions": stats.evictions, "stale_serves": observer.total(observer.stale_serves),
            "inflight_fetches": services.blobs.in_flight,
        },
    }


def _environment(app: web.Application, env: EnvironmentRecord, now: float) -> dict[str, Any]:
    live = app[LIVE]
    return {
        "name": env.name, "anonymous_pull": env.anonymous_pull, "anonymous_from": list(env.anonymous_from),
        "source": env.source,
        "registries": _registries(app, env.name, now),
        # Never a secret, nor its hash.
        "keys": [{"id": k.id, "source": k.source, "created": k.created, "last_used": k.last_used}
                 for k in live.keys.values() if k.environment == env.name],
    }


def _registries(app: web.Application, environment: str, now: float) -> list[dict[str, Any]]:
    live, observer = app[LIVE], app[OBSERVER]
    mine = [r for r in live.records if r.environment == environment]
    # observer.upstreams is keyed by label: known registries, plus "other".
    # Every environment pulls through them all; the others list only their own.
    addresses = sorted(live.known_registries() | set(observer.upstreams) | {r.address for r in mine}
                       if environment == DEFAULT_ENVIRONMENT else {r.address for r in mine})
    rows = []
    for address in addresses:
        records = [r for r in mine if r.address == address]
        chosen = live.in_use.get((environment, address))
        upstream = observer.upstreams.get(address)
        row: dict[str, Any] = {
            "address": address,
            "alias": live.alias_of(address),
            # "other" stands for every registry named only by clients.
            "endpoint": live.endpoint(address).url if address != OTHER else None,
            "kind": chosen.kind if chosen else (records[-1].kind if records else "anonymous"),
            "state": "active" if chosen else ("inactive" if records else "anonymous"),
            "credential": {"id": chosen.id, "username": chosen.username} if chosen else None,
            "credentials": len(records),
            "token": None,
            "last_status": upstream.last_status if upstream else None,
            "last_latency_ms": round(upstream.last_latency * 1000, 1) if upstream and upstream.last_latency else None,
            "last_seen": upstream.last_seen if upstream else None,
            "last_failure": upstream.last_failure if upstream else None,
            **contact_state(upstream),
            "ratelimit_remaining": upstream.ratelimit_remaining if upstream else None,
            "errors": [{"time": when, "message": message, "repeats": repeats}
                       for when, message, repeats in (upstream.errors if upstream else [])][::-1],
        }
        state = live.minted.states.get(f"cred:{chosen.id}") if chosen else None
        if state is not None:
            row["token"] = {
                "minted_at": state.minted_at,
                "expires_at": state.minted.expires_at if state.minted else None,
                "next_refresh": state.refresh_at, "last_result": state.last_result, "failures": state.failures,
            }
        rows.append(row)
    return rows


def contact_state(upstream: UpstreamState | None) -> dict[str, Any]:
    """The registry's state now, from the newest of its last answer, failure and block.

    ``contact`` is ``ok`` (it answered last), ``failing`` (its last contact
    failed: ``last_error`` says why), ``blocked`` (a policy kept the last
    request from being sent, so it was not contacted) or ``not contacted``.
    """
    if upstream is None:
        return {"contact": "not contacted", "last_error": None, "last_success": None, "blocked": None}
    success = upstream.last_success
    blocked = upstream.blocked
    answered, failed = upstream.last_seen, upstream.last_failure
    contact = "ok" if answered is not None else "not contacted"
    # A failing answer (a 5xx, a refusal) is an answer and then a failure: the failure wins a tie.
    if failed is not None and (answered is None or failed >= answered):
        contact = "failing"
    if blocked is not None and blocked[0] >= max(answered or 0.0, failed or 0.0):
        contact = "blocked"
    return {
        "contact": contact,
        "last_error": upstream.errors[-1][1] if contact == "failing" and upstream.errors else None,
        "last_success": None if success is None else {
            "time": success[0], "status": success[1], "latency_ms": round(success[2] * 1000, 1)},
        "blocked": None if blocked is None else {"time": blocked[0], "policy": blocked[1], "message": blocked[2]},
    }
