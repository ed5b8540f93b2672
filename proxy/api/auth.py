"""The admin token check, shared by the admin API, the status page and /metrics."""

from __future__ import annotations

import hmac

from aiohttp import BasicAuth, web

from proxy.api.state import ADMIN_TOKEN

__all__ = ["has_admin_token", "require_admin"]


def has_admin_token(request: web.Request) -> bool:
    """Bearer <token>, or HTTP Basic with the token as the password (any user name)."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    given = value.strip()
    if scheme.lower() == "basic":
        try:
            given = BasicAuth.decode(header, encoding="utf-8").password
        except ValueError:
            return False
    elif scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.encode(), request.config_dict[ADMIN_TOKEN].value.encode())


def require_admin(request: web.Request, *, realm_basic: bool) -> None:
    if has_admin_token(request):
        return
    if realm_basic:
        # Basic, so that a browser simply prompts; the token is the password.
        raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Basic realm="registry-proxy status"'},
                                   text="the status page needs the admin token as the password\n")
    raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Bearer realm="registry-proxy"'},
                               text="send the admin token as 'Authorization: Bearer <token>'\n")
