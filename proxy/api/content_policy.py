"""What a browser may make of our answers: never sniff a type, run nothing a registry answer carries.

Registry answers hold what upstreams sent. Served from the proxy's origin, a
body a browser treated as a page could read /status.json with the admin
credentials the browser keeps, so every such answer forbids scripts, styles,
frames and sniffing. The status page is ours: it gets its one stylesheet,
by nonce, and nothing else.
"""

from __future__ import annotations

import secrets

from aiohttp import web

__all__ = ["NOSNIFF", "REGISTRY_HEADERS", "new_nonce", "registry_headers", "status_page_headers"]

NOSNIFF = {"X-Content-Type-Options": "nosniff"}
REGISTRY_HEADERS = {
    **NOSNIFF,
    "Content-Security-Policy": "default-src 'none'; sandbox; frame-ancestors 'none'; base-uri 'none'; "
                               "form-action 'none'",
}


def new_nonce() -> str:
    return secrets.token_urlsafe(18)


def status_page_headers(nonce: str) -> dict[str, str]:
    return {
        **NOSNIFF,
        "Content-Security-Policy": f"default-src 'none'; style-src 'nonce-{nonce}'; frame-ancestors 'none'; "
                                   "base-uri 'none'; form-action 'none'",
    }


async def registry_headers(request: web.Request, response: web.StreamResponse) -> None:
    """An ``on_response_prepare`` hook: errors and streamed blobs get the headers as well."""
    response.headers.update(REGISTRY_HEADERS)
