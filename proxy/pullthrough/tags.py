"""Tag listing, passed through to the upstream page by page."""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urlencode

from multidict import MultiDictProxy
from yarl import URL

from proxy.errors import ErrorCode, RegistryError
from proxy.pullthrough.ports import Upstream
from proxy.reference import Target
from proxy.upstream.body import BodyTooLarge, read_limited
from proxy.upstream.endpoints import EndpointKind

__all__ = ["TagPage", "list_tags", "next_link_query"]

MAX_TAGS_BODY = 16 * 1024 * 1024


@dataclass(frozen=True)
class TagPage:
    tags: list[str]
    next_query: str | None  # the upstream's query for the next page, if any


async def list_tags(upstream: Upstream, target: Target, *, env: str, n: int | None, last: str | None) -> TagPage:
    params = {k: str(v) for k, v in (("n", n), ("last", last)) if v is not None}
    async with upstream.open(target, "GET", "tags/list", env=env, kind=EndpointKind.TAGS, params=params) as resp:
        try:
            body = await read_limited(resp, MAX_TAGS_BODY)
        except BodyTooLarge:
            raise RegistryError(ErrorCode.UNKNOWN,
                                f"tag list from {target.registry} is too large; use n= to page") from None
        next_query = next_link_query(resp.links)
    try:
        tags = json.loads(body).get("tags") or []
    except (ValueError, AttributeError):
        raise RegistryError(ErrorCode.UNKNOWN, f"upstream {target.registry} sent an unreadable tag list") from None
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise RegistryError(ErrorCode.UNKNOWN, f"upstream {target.registry} sent an unreadable tag list")
    return _paginate(tags, next_query, n=n, last=last)


def _paginate(tags: list[str], next_query: str | None, *, n: int | None, last: str | None) -> TagPage:
    """Apply n/last here when the upstream ignored them (distribution before 3.0 does).

    The spec orders tags lexically, so the page after ``last`` is the sorted
    tags greater than it; for an upstream that honoured both, this changes nothing.
    """
    if next_query is not None or (last is None and (n is None or len(tags) <= n)):
        return TagPage(tags, next_query)
    remaining = sorted(t for t in tags if last is None or t > last)
    page = remaining if n is None else remaining[:n]
    more = len(page) < len(remaining) and page
    return TagPage(page, urlencode({"n": n, "last": page[-1]}) if more else None)


def next_link_query(links: MultiDictProxy[MultiDictProxy[str | URL]]) -> str | None:
    """The query of the upstream's ``rel="next"`` link; the path is the upstream's own, not ours."""
    link = links.get("next")
    url = None if link is None else link.get("url")
    return (url.query_string or None) if isinstance(url, URL) else None
