"""tags/list paging: n and last applied when the upstream ignores them, and its Link header read back."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import pytest
from aiohttp import web
from proxy.pullthrough.tags import TagPage, _paginate, next_link_query

# As an upstream that ignores n and last returns them: everything, in no particular order.
ALL_TAGS = ["latest", "1.10", "1.2", "1.9", "2.0", "alpine", "1.0"]


def walk(n: int) -> list[list[str]]:
    """Follow next links through an upstream that ignores n/last, as a client would."""
    pages: list[list[str]] = []
    last: str | None = None
    for _ in range(len(ALL_TAGS) + 2):
        page = _paginate(list(ALL_TAGS), None, n=n, last=last)
        pages.append(page.tags)
        if page.next_query is None:
            return pages
        query = parse_qs(page.next_query)
        assert query["n"] == [str(n)]
        last = query["last"][0]
    raise AssertionError(f"paging never ended: {pages}")


def test_without_n_the_upstream_answer_passes_through() -> None:
    page = _paginate(list(ALL_TAGS), "n=100&last=x", n=None, last=None)
    assert page == TagPage(ALL_TAGS, "n=100&last=x")


def test_an_upstream_that_honoured_n_keeps_its_own_order_and_next_link() -> None:
    upstream_page = ["b", "a"]
    page = _paginate(upstream_page, "n=2&last=b", n=2, last=None)
    assert page == TagPage(["b", "a"], "n=2&last=b")


def test_first_page_when_the_upstream_ignored_n() -> None:
    page = _paginate(list(ALL_TAGS), None, n=3, last=None)
    assert page.tags == ["1.0", "1.10", "1.2"]
    assert page.next_query is not None
    assert parse_qs(page.next_query) == {"n": ["3"], "last": ["1.2"]}


def test_a_page_after_last_when_the_upstream_ignored_both() -> None:
    page = _paginate(list(ALL_TAGS), None, n=2, last="1.2")
    assert page.tags == ["1.9", "2.0"]
    assert page.next_query is not None and parse_qs(page.next_query)["last"] == ["2.0"]


def test_last_page_has_no_next_link() -> None:
    page = _paginate(list(ALL_TAGS), None, n=3, last="2.0")
    assert page == TagPage(["alpine", "latest"], None)


def test_last_past_every_tag_gives_an_empty_final_page() -> None:
    assert _paginate(list(ALL_TAGS), None, n=3, last="zzz") == TagPage([], None)


@pytest.mark.parametrize("n", [1, 2, 3, 6])
def test_walking_every_page_lists_every_tag_once_in_order(n: int) -> None:
    pages = walk(n)
    assert [tag for page in pages for tag in page] == sorted(ALL_TAGS)
    assert all(0 < len(page) <= n for page in pages)


def test_n_equal_to_the_number_of_tags_is_one_page() -> None:
    assert _paginate(list(ALL_TAGS), None, n=len(ALL_TAGS), last=None) == TagPage(ALL_TAGS, None)


def test_last_is_applied_even_when_few_tags_come_back() -> None:
    # An upstream that ignores last sends a, b, c for ?n=10&last=b; the client asked for what follows b.
    assert _paginate(["a", "b", "c"], None, n=10, last="b").tags == ["c"]


def test_n_zero_returns_no_tags() -> None:
    assert _paginate(["a", "b"], None, n=0, last=None) == TagPage([], None)


def test_next_query_is_urlencoded() -> None:
    page = _paginate(["a+b", "a b", "c"], None, n=1, last=None)
    assert page.next_query is not None
    assert parse_qs(page.next_query) == {"n": ["1"], "last": ["a b"]}


# --- the next page, read from the upstream's Link header by aiohttp --------------------


async def next_query_from(aiohttp_client: Any, link: str | None) -> str | None:
    """What next_link_query makes of a Link header, as a real response carries it."""

    async def tags(request: web.Request) -> web.Response:
        return web.json_response({"tags": []}, headers={} if link is None else {"Link": link})

    app = web.Application()
    app.router.add_get("/v2/a/tags/list", tags)
    client = await aiohttp_client(app)
    async with client.get("/v2/a/tags/list") as resp:
        return next_link_query(resp.links)


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ('</v2/library/nginx/tags/list?last=1.25&n=100>; rel="next"', "last=1.25&n=100"),
        ("</v2/org/app/tags/list?n=2&last=b>; rel=next", "n=2&last=b"),
        ('</v2/org/app/tags/list?n=2&last=b>;rel="next"', "n=2&last=b"),
        ('</v2/org/app/tags/list?n=2&last=b>; rel = "next"', "n=2&last=b"),
        ('<https://quay.io/v2/org/app/tags/list?n=50&last=v1>; rel="next"', "n=50&last=v1"),
        ('</v2/a/tags/list?n=1&last=x>; rel="prev", </v2/a/tags/list?n=1&last=z>; rel="next"', "n=1&last=z"),
    ],
)
async def test_next_query_is_read_from_the_link(aiohttp_client: Any, link: str, expected: str) -> None:
    assert await next_query_from(aiohttp_client, link) == expected


@pytest.mark.parametrize(
    "link",
    [
        None,
        "",
        '</v2/a/tags/list?n=1&last=x>; rel="prev"',
        '</v2/a/tags/list>; rel="next"',
        '</v2/a/tags/list?>; rel="next"',
        "</v2/a/tags/list?n=1&last=x>",
        "garbage",
    ],
)
async def test_no_next_page(aiohttp_client: Any, link: str | None) -> None:
    assert await next_query_from(aiohttp_client, link) is None
