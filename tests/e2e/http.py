"""Plain HTTP calls to the proxy, the way a client without registry smarts makes them."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import json
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error_codes(self) -> list[str]:
        return [e["code"] for e in self.json()["errors"]]

    @property
    def error_message(self) -> str:
        return str(self.json()["errors"][0]["message"])


def call(host: str, method: str, path: str, headers: dict[str, str] | None = None, timeout: float = 60,
         body: bytes | None = None, source: str | None = None) -> Reply:
    """One request with the path sent exactly as given (no normalisation); from `source` (a loopback address) if given."""
    address, _, port = host.rpartition(":")
    conn = http.client.HTTPConnection(address, int(port), timeout=timeout,
                                      source_address=None if source is None else (source, 0))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
    finally:
        conn.close()


def get(host: str, path: str, **headers: str) -> Reply:
    return call(host, "GET", path, {k.replace("_", "-"): v for k, v in headers.items()})


def basic(user: str, password: str) -> str:
    """An Authorization header value: HTTP Basic."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class StreamResult:
    status: int
    cache: str | None
    digest: str | None  # sha256 of the body, None when the body failed
    error: str | None


async def fetch_digest(session: aiohttp.ClientSession, url: str) -> StreamResult:
    """GET a body, hashing it as it arrives, and report how it ended."""
    try:
        async with session.get(url) as resp:
            hasher = hashlib.sha256()
            async for chunk in resp.content.iter_chunked(256 * 1024):
                hasher.update(chunk)
            return StreamResult(resp.status, resp.headers.get("X-Registry-Proxy-Cache"),
                                "sha256:" + hasher.hexdigest(), None)
    except aiohttp.ClientError as exc:
        return StreamResult(-1, None, None, f"{type(exc).__name__}: {exc}")


def concurrent_gets(url: str, count: int) -> list[StreamResult]:
    return gather_gets([url] * count)


def gather_gets(urls: list[str]) -> list[StreamResult]:
    """GET every URL at once."""
    async def run() -> list[StreamResult]:
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            return await asyncio.gather(*(fetch_digest(session, url) for url in urls))

    return asyncio.run(run())
