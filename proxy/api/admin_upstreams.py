"""Admin API for how each registry is reached: /api/v1/upstreams/{address}.

Endpoint URL, insecure mode, a CA bundle trusted for that registry only, a
client certificate for mutual TLS, the token realms that may receive the
registry's credentials, and the alias clients may name it by. Changes apply
to the next pull; no daemon anywhere restarts.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from aiohttp import web

from proxy.api.admin_input import check_address, read_body
from proxy.api.state import LIVE
from proxy.config.connection import UPSTREAM_CHANGE
from proxy.credentials.certs import check_client_pair, parse_bundle
from proxy.directory import LiveState
from proxy.errors import ApiError, ApiErrorCode
from proxy.store.upstreams import UpstreamRecord
from proxy.upstream.tls import presented_chain

__all__ = ["setup_upstream_routes"]


def setup_upstream_routes(app: web.Application) -> None:
    app.router.add_get("/upstreams", list_upstreams)
    app.router.add_get("/upstreams/{address}", show_upstream)
    app.router.add_patch("/upstreams/{address}", change_upstream)
    app.router.add_delete("/upstreams/{address}", delete_upstream)
    app.router.add_get("/upstreams/{address}/certificates", fetch_certificates)


async def list_upstreams(request: web.Request) -> web.Response:
    live = request.config_dict[LIVE]
    return web.json_response({"upstreams": [_view(live, u) for u in live.upstream_records.values()]})


async def show_upstream(request: web.Request) -> web.Response:
    live = request.config_dict[LIVE]
    address = _address(request)
    record = live.upstream_records.get(address) or UpstreamRecord(address, source="default")
    return web.json_response(_view(live, record))


async def change_upstream(request: web.Request) -> web.Response:
    live = request.config_dict[LIVE]
    address = _address(request)
    _refuse_config(live, address)
    # Endpoint and certificates are checked as read; only certificate blocks are kept.
    body = await read_body(request, UPSTREAM_CHANGE)
    current = live.upstream_records.get(address) or UpstreamRecord(address)
    merged = replace(current, source="api", **{k: v for k, v in body.items()})
    merged = _check_pair(replace(merged, insecure=bool(merged.insecure), token_realms=merged.token_realms or ()))

    async def write() -> UpstreamRecord:
        # Under the change lock: no other write can take the alias between this check and the put.
        if "alias" in body:
            _check_alias(live, merged)
        return await live.upstreams.put(merged)

    await live.change(write)
    return web.json_response(_view(live, live.upstream_records[address]))


async def delete_upstream(request: web.Request) -> web.Response:
    live = request.config_dict[LIVE]
    address = _address(request)
    _refuse_config(live, address)
    if not await live.change(lambda: live.upstreams.delete(address)):
        raise ApiError(ApiErrorCode.NOT_FOUND, f"nothing is set for {address}", field="address")
    return web.Response(status=204)


async def fetch_certificates(request: web.Request) -> web.Response:
    """The chain the registry presents, unverified, for an operator to judge."""
    live = request.config_dict[LIVE]
    endpoint = live.endpoint(_address(request))
    try:
        chain = await asyncio.to_thread(presented_chain, endpoint.url)
    except ValueError as exc:
        raise ApiError(ApiErrorCode.INVALID, str(exc), field="address") from None
    except OSError as exc:
        raise ApiError(ApiErrorCode.UPSTREAM_FAILED, f"cannot reach {endpoint.url}: {exc.strerror or exc}") from None
    if not chain:
        raise ApiError(ApiErrorCode.UPSTREAM_FAILED, f"{endpoint.url} presented no certificate")
    return web.json_response({"address": endpoint.registry, "endpoint": endpoint.url,
                              "certificates": [c.as_dict() for c in chain]})


def _address(request: web.Request) -> str:
    return check_address(request.match_info["address"])


def _refuse_config(live: LiveState, address: str) -> None:
    if live.managed_by_config(address):
        raise ApiError(ApiErrorCode.CONFLICT, f"how {address} is reached is set in the config file: change it "
                       "there and restart", field="address")


def _check_alias(live: LiveState, record: UpstreamRecord) -> None:
    owner = live.aliases.get(record.alias) if record.alias is not None else None
    if owner is not None and owner != record.address:
        raise ApiError(ApiErrorCode.CONFLICT, f"alias {record.alias} already names {owner}: an alias names one "
                       "registry", field="alias")


def _check_pair(record: UpstreamRecord) -> UpstreamRecord:
    """The record, once its client certificate and key are known to go together."""
    if (record.client_cert is None) != (record.client_key is None):
        field = "client_key" if record.client_key is None else "client_cert"
        raise ApiError(ApiErrorCode.INVALID, "client_cert and client_key go together: set both or neither",
                       field=field)
    if record.client_cert is not None and record.client_key is not None:
        try:
            check_client_pair(record.client_cert, record.client_key)
        except ValueError as exc:
            field = "client_key" if "client_key" in str(exc) else "client_cert"
            raise ApiError(ApiErrorCode.INVALID, str(exc), field=field) from None
    return record


def _view(live: LiveState, record: UpstreamRecord) -> dict[str, Any]:
    endpoint = live.endpoint(record.address)
    cas = parse_bundle(record.ca_cert) if record.ca_cert else []
    return {
        "address": record.address, "endpoint": endpoint.url, "insecure": record.insecure,
        "ca_cert": record.ca_cert,
        "ca_certificates": [{"subject": c.subject, "not_after": c.not_after, "sha256": c.sha256} for c in cas],
        "client_cert": record.client_cert, "client_key_set": record.client_key is not None,
        "token_realms": list(record.token_realms), "alias": record.alias, "source": record.source,
    }
