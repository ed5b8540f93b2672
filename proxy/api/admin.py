"""The admin API under /api/v1: registry credentials, run-time settings, and checking the cache.

JSON only, behind the admin token. Every change is committed to the store
before the answer, and applies to the next pull.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.api.admin_cache import setup_cache_routes
from proxy.api.admin_envs import setup_environment_routes
from proxy.api.admin_input import read_body
from proxy.api.admin_upstreams import setup_upstream_routes
from proxy.api.auth import has_admin_token
from proxy.api.state import LIVE, OBSERVER
from proxy.config.runtime import SETTING_DEFAULTS, setting_body
from proxy.credentials.fields import CREDENTIAL, CREDENTIAL_EDIT
from proxy.credentials.kinds import parse_credential, parse_edit
from proxy.credentials.schema import FieldError
from proxy.directory import LiveState
from proxy.errors import ApiError, ApiErrorCode
from proxy.humanize import timestamp
from proxy.postgres.pool import PgUnavailable
from proxy.store.credentials import ManagedByConfig, NotFound, RegistryRecord
from proxy.store.db import StateFull
from proxy.store.runtime_settings import SettingValue

__all__ = ["PREFIX", "admin_app"]

PREFIX = "/api/v1"

log = logging.getLogger(__name__)


def admin_app() -> web.Application:
    """The sub-application mounted at ``PREFIX``: JSON errors, admin token on every route but the document."""
    app = web.Application(middlewares=[admin_errors])
    r = app.router
    r.add_get("/openapi.json", openapi)
    r.add_get("/registries", list_registries)
    r.add_post("/registries", add_registry)
    r.add_get("/registries/{id}", show_registry)
    r.add_patch("/registries/{id}", edit_registry)
    r.add_delete("/registries/{id}", delete_registry)
    r.add_post("/registries/{id}/activate", activate_registry)
    r.add_post("/registries/{id}/deactivate", deactivate_registry)
    r.add_get("/settings", list_settings)
    r.add_get("/settings/{name}", show_setting)
    r.add_put("/settings/{name}", set_setting)
    r.add_delete("/settings/{name}", unset_setting)
    setup_upstream_routes(app)
    setup_environment_routes(app)
    setup_cache_routes(app)
    return app


@web.middleware
async def admin_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        if request.path != f"{PREFIX}/openapi.json":
            _authorize(request)
        return await handler(request)
    except ApiError as err:
        return _render(err)
    except StateFull as exc:
        log.error("%s", exc)
        request.config_dict[OBSERVER].state_disk_full += 1
        return _render(ApiError(ApiErrorCode.INSUFFICIENT_STORAGE, "the proxy's disk is full: nothing was changed; "
                                "free space under its data_dir and try again"))
    except PgUnavailable as exc:
        log.error("%s", exc)
        return _render(ApiError(ApiErrorCode.UNAVAILABLE, "the state database (state.url) cannot be reached: nothing "
                                "was changed; try again"))
    except web.HTTPMethodNotAllowed:
        return _render(ApiError(ApiErrorCode.METHOD_NOT_ALLOWED, f"{request.method} is not allowed on {request.path}"))
    except web.HTTPNotFound:
        return _render(ApiError(ApiErrorCode.NOT_FOUND, f"no such API path: {request.path}"))
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unhandled error for %s %s", request.method, request.path)
        return _render(ApiError(ApiErrorCode.INTERNAL, "internal error; see the proxy's log"))


def _render(err: ApiError) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="registry-proxy"'} if err.code is ApiErrorCode.UNAUTHORIZED else {}
    return web.Response(status=err.code.status, body=err.body(), content_type="application/json", headers=headers)


def _authorize(request: web.Request) -> None:
    if not has_admin_token(request):
        raise ApiError(ApiErrorCode.UNAUTHORIZED, "send the admin token as 'Authorization: Bearer <token>'")


async def openapi(request: web.Request) -> web.Response:
    # Building the document costs over 1 MiB of resident memory: only a
    # proxy that is asked for it pays that.
    from proxy.api.openapi import OPENAPI

    return web.json_response(OPENAPI)


# Registries


async def list_registries(request: web.Request) -> web.Response:
    live = request.config_dict[LIVE]
    environment = request.query.get("environment")
    return web.json_response({"registries": [_registry(live, r) for r in live.records
                                             if environment is None or r.environment == environment]})


async def add_registry(request: web.Request) -> web.Response:
    body = await read_body(request, CREDENTIAL)
    address = body["address"]
    try:
        given = parse_credential(body, address=address)
    except FieldError as exc:
        raise ApiError(ApiErrorCode.INVALID, str(exc), field=exc.field) from None
    live = request.config_dict[LIVE]
    if given.environment not in live.envs:
        raise ApiError(ApiErrorCode.INVALID, f"no environment {given.environment!r}: create it first",
                       field="environment")
    record = await _write(live, lambda: live.registries.add(
        address=address, email=given.email, username=given.username, password=given.secret, kind=given.kind,
        options=given.options, environment=given.environment))
    return web.json_response(_registry(live, record), status=201,
                             headers={"Location": f"{PREFIX}/registries/{record.id}"})


async def show_registry(request: web.Request) -> web.Response:
    live = request.config_dict[LIVE]
    return web.json_response(_registry(live, _find(live, request)))


async def edit_registry(request: web.Request) -> web.Response:
    live = request.config_dict[LIVE]
    record = _find(live, request)
    body = await read_body(request, CREDENTIAL_EDIT)
    if "address" in body and body["address"] != record.address:
        raise ApiError(ApiErrorCode.INVALID, "the address of a credential cannot change: delete this credential "
                       "and add a new one for the new address", field="address")
    if "environment" in body and body["environment"] != record.environment:
        raise ApiError(ApiErrorCode.INVALID, "a credential stays in its environment: add a new one in the other "
                       "environment", field="environment")
    try:
        given = parse_edit(record, body)
    except FieldError as exc:
        raise ApiError(ApiErrorCode.INVALID, str(exc), field=exc.field) from None
    updated = await _write(live, lambda: live.registries.update(
        record.id, email=given.email, username=given.username, password=given.secret, options=given.options))
    return web.json_response(_registry(live, updated))


async def delete_registry(request: web.Request) -> web.Response:
    live = request.config_dict[LIVE]
    record = _find(live, request)
    await _write(live, lambda: live.registries.delete(record.id))
    return web.Response(status=204)


async def activate_registry(request: web.Request) -> web.Response:
    return await _set_active(request, True)


async def deactivate_registry(request: web.Request) -> web.Response:
    return await _set_active(request, False)


async def _set_active(request: web.Request, active: bool) -> web.Response:
    live = request.config_dict[LIVE]
    record = _find(live, request)
    updated = await _write(live, lambda: live.registries.set_active(record.id, active))
    return web.json_response(_registry(live, updated))


def _find(live: LiveState, request: web.Request) -> RegistryRecord:
    raw = request.match_info["id"]
    if re.fullmatch(r"[0-9]{1,18}", raw):
        for record in live.records:
            if record.id == int(raw):
                return record
    raise ApiError(ApiErrorCode.NOT_FOUND, f"no registry credential with id {raw[:40]!r}", field="id")


async def _write(live: LiveState, work: Any) -> RegistryRecord:
    try:
        result: RegistryRecord = await live.change(work)
        return result
    except NotFound:
        raise ApiError(ApiErrorCode.NOT_FOUND, "that registry credential, or its environment, no longer exists",
                       field="id") from None
    except ManagedByConfig:
        raise ApiError(ApiErrorCode.CONFLICT, "this credential is managed by the config file: change it there "
                       "and restart", field="id") from None


def _registry(live: LiveState, record: RegistryRecord) -> dict[str, Any]:
    chosen = live.in_use.get((record.environment, record.address))
    view: dict[str, Any] = {
        "id": record.id, "address": record.address, "environment": record.environment, "kind": record.kind,
        "email": record.email,
        "username": record.username, "state": record.state, "in_use": chosen is not None and chosen.id == record.id,
        "source": record.source, "created": timestamp(record.created), "updated": timestamp(record.updated),
    }
    view.update(record.options)
    state = live.minted.states.get(f"cred:{record.id}")
    if state is not None:
        # When and how the proxy minted it; never the token itself.
        view["token"] = {
            "minted_at": timestamp(state.minted_at) if state.minted_at else None,
            "expires_at": timestamp(state.minted.expires_at) if state.minted and state.minted.expires_at else None,
            "next_refresh": timestamp(state.refresh_at) if state.refresh_at else None,
            "last_result": state.last_result, "failures": state.failures, "mints": state.mints,
        }
    return view


# Settings


async def list_settings(request: web.Request) -> web.Response:
    live = request.config_dict[LIVE]
    return web.json_response({"settings": [_setting(v) for v in live.values.values()]})


async def show_setting(request: web.Request) -> web.Response:
    return web.json_response(_setting(request.config_dict[LIVE].values[_setting_name(request)]))


async def set_setting(request: web.Request) -> web.Response:
    name = _setting_name(request)
    value = (await read_body(request, setting_body(name)))["value"]
    live = request.config_dict[LIVE]
    return web.json_response(_warned(live, await live.change(lambda: live.settings.set(name, value))))


async def unset_setting(request: web.Request) -> web.Response:
    """Back to the config file's value, or to the default."""
    name = _setting_name(request)
    live = request.config_dict[LIVE]
    return web.json_response(_warned(live, await live.change(lambda: live.settings.unset(name))))


def _warned(live: LiveState, setting: SettingValue) -> dict[str, Any]:
    """The setting, with why the settings as they now stand make unprefixed pulls fail, if they do."""
    answer = _setting(setting)
    warnings = live.setting_warnings()
    if warnings:
        answer["warnings"] = warnings
    return answer


def _setting_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if name not in SETTING_DEFAULTS:
        raise ApiError(ApiErrorCode.NOT_FOUND, f"no setting {name[:60]!r}; settings: {', '.join(SETTING_DEFAULTS)}",
                       field="name")
    return name


def _setting(value: SettingValue) -> dict[str, Any]:
    return {"name": value.name, "value": value.value, "source": value.source,
            "updated": None if value.updated is None else timestamp(value.updated)}
