"""Admin API for environments and their pull keys: /api/v1/environments.

A key's secret is in the answer to its creation and nowhere else, ever:
the store keeps a scrypt hash, listings show id, creation and last use.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proxy.api.admin_input import read_body
from proxy.api.state import LIVE
from proxy.config.environments import ENVIRONMENT_BODY, ENVIRONMENT_EDIT, KEY_BODY
from proxy.directory import LiveState
from proxy.errors import ApiError, ApiErrorCode
from proxy.humanize import timestamp
from proxy.store.credentials import ManagedByConfig, NotFound
from proxy.store.environments import AlreadyExists, EnvironmentRecord, InUse, Protected
from proxy.store.pullkeys import PullKeyRecord, new_key_id, new_secret

__all__ = ["env_view", "setup_environment_routes"]


def setup_environment_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/environments", list_environments)
    r.add_post("/environments", add_environment)
    r.add_get("/environments/{name}", show_environment)
    r.add_patch("/environments/{name}", change_environment)
    r.add_delete("/environments/{name}", delete_environment)
    r.add_get("/environments/{name}/keys", list_keys)
    r.add_post("/environments/{name}/keys", add_key)
    r.add_delete("/environments/{name}/keys/{id}", revoke_key)


async def list_environments(request: web.Request) -> web.Response:
    live = request.config_dict[LIVE]
    return web.json_response({"environments": [env_view(live, e) for e in live.envs.values()]})


async def add_environment(request: web.Request) -> web.Response:
    body = await read_body(request, ENVIRONMENT_BODY)
    live = request.config_dict[LIVE]
    try:
        record = await live.change(lambda: live.environments.add(
            body["name"], anonymous_pull=body.get("anonymous_pull", False),
            anonymous_from=body.get("anonymous_from", ())))
    except AlreadyExists:
        raise ApiError(ApiErrorCode.CONFLICT, f"environment {body['name']!r} already exists", field="name") from None
    return web.json_response(env_view(live, record), status=201, headers={"Location": f"{request.path}/{record.name}"})


async def show_environment(request: web.Request) -> web.Response:
    live = request.config_dict[LIVE]
    return web.json_response(env_view(live, _find(live, request)))


async def change_environment(request: web.Request) -> web.Response:
    live = request.config_dict[LIVE]
    current = _find(live, request)
    body = await read_body(request, ENVIRONMENT_EDIT)
    anonymous_pull = body.get("anonymous_pull", current.anonymous_pull)
    anonymous_from = body.get("anonymous_from", current.anonymous_from)
    record = await _write(live, current.name, lambda: live.environments.update(
        current.name, anonymous_pull=anonymous_pull, anonymous_from=anonymous_from))
    return web.json_response(env_view(live, record))


async def delete_environment(request: web.Request) -> web.Response:
    live = request.config_dict[LIVE]
    current = _find(live, request)
    force = _flag(request, "force")
    try:
        await _write(live, current.name, lambda: live.environments.delete(current.name, force=force))
    except InUse as exc:
        raise ApiError(ApiErrorCode.CONFLICT, f"environment {current.name!r} still has {exc}: delete them first, "
                       "or delete with ?force=true to delete them with it", field="name") from None
    except Protected:
        raise ApiError(ApiErrorCode.CONFLICT, "the default environment cannot be deleted; turn its anonymous pulls "
                       "off instead", field="name") from None
    return web.Response(status=204)


async def list_keys(request: web.Request) -> web.Response:
    live = request.config_dict[LIVE]
    env = _find(live, request)
    return web.json_response({"keys": [_key_view(k) for k in live.keys.values() if k.environment == env.name]})


async def add_key(request: web.Request) -> web.Response:
    live = request.config_dict[LIVE]
    env = _find(live, request)
    body = await read_body(request, KEY_BODY) if request.body_exists else {}
    key_id = body.get("id") or new_key_id()
    secret = new_secret()
    try:
        record = await _write(live, env.name, lambda: live.environments.add_key(env.name, key_id, secret))
    except AlreadyExists:
        raise ApiError(ApiErrorCode.CONFLICT, f"a pull key with id {key_id!r} already exists", field="id") from None
    # The only time the secret is shown: it is not kept anywhere it could be read back.
    view = {**_key_view(record), "secret": secret}
    return web.json_response(view, status=201, headers={"Location": f"{request.path}/{record.id}",
                                                        "Cache-Control": "no-store"})


async def revoke_key(request: web.Request) -> web.Response:
    live = request.config_dict[LIVE]
    env = _find(live, request)
    key_id = request.match_info["id"]
    key = live.keys.get(key_id)
    if key is None or key.environment != env.name:
        raise ApiError(ApiErrorCode.NOT_FOUND, f"environment {env.name!r} has no pull key {key_id[:70]!r}",
                       field="id")
    try:
        await live.change(lambda: live.environments.delete_key(key_id))
    except ManagedByConfig:
        raise ApiError(ApiErrorCode.CONFLICT, "this key is declared in the config file: remove it there and "
                       "restart", field="id") from None
    except NotFound:
        raise ApiError(ApiErrorCode.NOT_FOUND, "that pull key no longer exists", field="id") from None
    return web.Response(status=204)


def env_view(live: LiveState, env: EnvironmentRecord) -> dict[str, Any]:
    return {
        "name": env.name, "anonymous_pull": env.anonymous_pull, "anonymous_from": list(env.anonymous_from),
        "source": env.source, "created": timestamp(env.created), "updated": timestamp(env.updated),
        "registries": sum(1 for r in live.records if r.environment == env.name),
        "keys": sum(1 for k in live.keys.values() if k.environment == env.name),
    }


def _key_view(key: PullKeyRecord) -> dict[str, Any]:
    return {"id": key.id, "environment": key.environment, "source": key.source, "created": timestamp(key.created),
            "last_used": None if key.last_used is None else timestamp(key.last_used)}


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "false").lower()
    if value not in ("1", "true", "yes", "0", "false", "no"):
        raise ApiError(ApiErrorCode.INVALID, f"{name} must be true or false, not {value[:40]!r}", field=name)
    return value in ("1", "true", "yes")


def _find(live: LiveState, request: web.Request) -> EnvironmentRecord:
    name = request.match_info["name"]
    env = live.envs.get(name)
    if env is None:
        raise ApiError(ApiErrorCode.NOT_FOUND, f"no environment {name[:70]!r}", field="name")
    return env


async def _write(live: LiveState, name: str, work: Any) -> Any:
    try:
        return await live.change(work)
    except NotFound:
        raise ApiError(ApiErrorCode.NOT_FOUND, f"environment {name!r} no longer exists", field="name") from None
    except ManagedByConfig:
        raise ApiError(ApiErrorCode.CONFLICT, f"environment {name!r} is declared in the config file: change it "
                       "there and restart", field="name") from None
