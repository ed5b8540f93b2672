"""The admin token check, shared by the admin API, the status page and /metrics.

The admin API and /metrics take only ``Authorization: Bearer <token>``. The
status page also takes HTTP Basic with the token as the password, so that a
browser prompts; a browser then sends that Basic header on its own, which is
why nothing that changes state accepts it.
"""

from __future__ import annotations

import hmac

from aiohttp import BasicAuth, web

from proxy.api.state import ADMIN_TOKEN

__all__ = ["has_admin_token", "require_admin"]


def has_admin_token(request: web.Request, *, basic: bool = False) -> bool:
    """Bearer <token>; with ``basic``, also HTTP Basic with the token as the password (any user name)."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    given = value.strip()
    if basic and scheme.lower() == "basic":
        try:
            given = BasicAuth.decode(header, encoding="utf-8").password
        except ValueError:
            return False
    elif scheme.lower() != "bearer":
        return False
    # Header bytes that are not UTF-8 arrive as surrogate escapes: compare the bytes as sent.
    try:
        sent = given.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(sent, request.config_dict[ADMIN_TOKEN].value.encode())


def require_admin(request: web.Request, *, realm_basic: bool) -> None:
    """Raise 401 unless the request has the admin token; ``realm_basic`` also takes it as the Basic password."""
    if has_admin_token(request, basic=realm_basic):
        return
    if realm_basic:
        # Basic, so that a browser simply prompts; the token is the password.
        raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Basic realm="registry-proxy status"'},
                                   text="the status page needs the admin token as the password\n")
    raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Bearer realm="registry-proxy"'},
                               text="send the admin token as 'Authorization: Bearer <token>'\n")
