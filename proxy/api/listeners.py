"""With ``admin.listen`` set, the admin API, the status page and /metrics answer only there.

The registry port is the one exposed to every node; the admin port can be
kept off the cluster network (the Helm chart does so). Both are sites of
one application, so this sorts requests by the port they arrived on: the
wrong port answers 404, as if the path did not exist there. Health checks
answer on both.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.api.pullauth import REALM_PATH
from proxy.api.state import SETTINGS

__all__ = ["split_listeners"]

_EVERYWHERE = ("/healthz", "/readyz")


@web.middleware
async def split_listeners(request: web.Request, handler: Handler) -> web.StreamResponse:
    admin = request.config_dict[SETTINGS].admin_listen
    path = request.path
    if admin is None or path in _EVERYWHERE:
        return await handler(request)
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    on_admin = sockname is not None and sockname[1] == admin[1]
    registry_path = path == "/v2" or path.startswith("/v2/") or path == REALM_PATH
    if on_admin == registry_path:
        where = "the registry port" if registry_path else "the admin listener"
        raise web.HTTPNotFound(text=f"not here: this is served on {where}\n")
    return await handler(request)
