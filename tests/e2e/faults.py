"""In-process fakes for upstream behaviour a real registry won't show on demand.

* `RedirectingUpstream`: a real registry behind a front that answers blob GETs
  with a 307 to a separate "blob store" host, like Docker Hub and S3/CDN-backed
  registries do. The blob store records every request's headers so tests can
  prove the proxy does not leak `Authorization`/`Cookie` across the redirect.
* `FaultyUpstream`: a minimal registry whose one layer blob is truncated,
  corrupt or slow.

Both run on 127.0.0.1 in background threads (see bgserver.py).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from .bgserver import BackgroundApp
from .images import MT_MANIFEST, make_config, make_layer, make_manifest, sha256_digest
from .upstream import Upstream

SESSION = web.AppKey("session", aiohttp.ClientSession)
BLOB_PATH = re.compile(r"^/v2/(?P<repo>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})$")
API_HEADER = {"Docker-Distribution-API-Version": "registry/2.0"}
# Hop-by-hop headers (RFC 9110 7.6.1) plus the ones aiohttp computes itself.
_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length",
}  # fmt: skip
# What an object store would plausibly send back; registry-only headers such
# as Docker-Content-Digest are deliberately not forwarded by the blob store.
_BLOBSTORE_HEADERS = ("Content-Type", "Content-Range", "Accept-Ranges", "ETag", "Last-Modified")


async def _relay(
    request: web.Request, upstream: aiohttp.ClientResponse, headers: CIMultiDict[str]
) -> web.StreamResponse:
    """Stream an upstream response back, keeping its status and Content-Length."""
    response = web.StreamResponse(status=upstream.status, headers=headers)
    if upstream.content_length is not None:
        response.content_length = upstream.content_length
    await response.prepare(request)
    if request.method != "HEAD":
        async for chunk in upstream.content.iter_chunked(1 << 16):
            await response.write(chunk)
    await response.write_eof()
    return response


class RedirectingUpstream:
    """Front for a real registry that sends blob GETs to a separate blob store."""

    def __init__(self, real: Upstream) -> None:
        self.real = real
        self.redirects = 0
        self.redirected: list[str] = []  # digests, one per 307 issued
        self.blobstore_requests: list[dict[str, Any]] = []
        # digest -> (repo, Authorization the front accepted): lets the blob
        # store fetch from the real registry without the client's headers.
        self._grants: dict[str, tuple[str, str | None]] = {}

        store = web.Application()
        store.router.add_route("GET", "/blobstore/{digest}", self._blobstore)
        store.router.add_route("HEAD", "/blobstore/{digest}", self._blobstore)
        store.cleanup_ctx.append(self._client_ctx)
        self._store = BackgroundApp(store, name="e2e-blobstore")

        front = web.Application(client_max_size=1 << 30)
        front.router.add_route("*", "/{tail:.*}", self._front)
        front.cleanup_ctx.append(self._client_ctx)
        self._front_app = BackgroundApp(front, name="e2e-redirecting-upstream")
        self.url = self._front_app.url
        self.host = self._front_app.host
        self.blobstore_url = self._store.url

    async def _client_ctx(self, app: web.Application) -> Any:
        # Each app runs on its own loop, so each gets its own client session.
        connector = aiohttp.TCPConnector(ssl=self.real.ssl_context() or True)
        session = aiohttp.ClientSession(auto_decompress=False, connector=connector)
        app[SESSION] = session
        yield
        await session.close()

    async def _front(self, request: web.Request) -> web.StreamResponse:
        session: aiohttp.ClientSession = request.app[SESSION]
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _HOP)
        match = BLOB_PATH.match(request.path)
        if request.method == "GET" and match is not None:
            # Like Docker Hub: authorize first (so a 401 challenge still comes
            # from the registry), redirect only when the caller may read it.
            async with session.head(self.real.url + request.path, headers=headers, allow_redirects=False) as check:
                allowed = check.status == 200
            if allowed:
                digest = match["digest"]
                self._grants[digest] = (match["repo"], request.headers.get("Authorization"))
                self.redirects += 1
                self.redirected.append(digest)
                location = f"{self.blobstore_url}/blobstore/{digest}?sig=x"
                return web.Response(status=307, headers={**API_HEADER, "Location": location})
        body = await request.read() if request.body_exists else None
        async with session.request(
            request.method, self.real.url + request.path_qs, headers=headers, data=body, allow_redirects=False
        ) as upstream:
            out = CIMultiDict((k, v) for k, v in upstream.headers.items() if k.lower() not in _HOP)
            moved = out.get("Location")
            if moved and moved.startswith(self.real.url):
                # Upload URLs are absolute; keep the client talking to the front.
                out["Location"] = self.url + moved[len(self.real.url) :]
            return await _relay(request, upstream, out)

    async def _blobstore(self, request: web.Request) -> web.StreamResponse:
        self.blobstore_requests.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "remote": request.remote,
            }
        )
        digest = request.match_info["digest"]
        grant = self._grants.get(digest)
        if request.query.get("sig") != "x" or grant is None:
            return web.Response(status=403, text="signature mismatch")
        repo, authorization = grant
        headers = CIMultiDict[str]()
        if authorization:
            headers["Authorization"] = authorization
        if "Range" in request.headers:
            headers["Range"] = request.headers["Range"]
        session: aiohttp.ClientSession = request.app[SESSION]
        blob_url = f"{self.real.url}/v2/{repo}/blobs/{digest}"
        async with session.request(request.method, blob_url, headers=headers) as upstream:
            out = CIMultiDict((k, upstream.headers[k]) for k in _BLOBSTORE_HEADERS if k in upstream.headers)
            return await _relay(request, upstream, out)

    def stop(self) -> None:
        self._front_app.stop()
        self._store.stop()


class FaultyUpstream:
    """A one-image registry (repo `fault/app`, tag `1`) with a misbehaving layer.

    Modes for the layer blob GET: "truncate" (announces the full length, sends
    half, closes the connection), "wrong" (full length of other bytes),
    "slow" (right bytes in `piece`-byte writes `delay` seconds apart) and
    "ok". HEAD always tells the truth. The content is seeded, so digests are
    the same in every run and mode.
    """

    MODES = ("truncate", "wrong", "slow", "ok")
    REPO = "fault/app"
    TAG = "1"

    def __init__(self, mode: str, *, layer_size: int = 256 * 1024, piece: int = 8192, delay: float = 0.01) -> None:
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, not {mode!r}")
        self.mode = mode
        self.piece = piece
        self.delay = delay
        self.layer_bytes, diff_id = make_layer(layer_size, seed=b"faulty-upstream")
        self.layer_digest = sha256_digest(self.layer_bytes)
        self.layer_size = len(self.layer_bytes)
        # Same length, every byte flipped: only a digest check can catch it.
        self.wrong_bytes = bytes(b ^ 0xFF for b in self.layer_bytes)
        self.config_bytes = make_config(("linux", "amd64"), [diff_id])
        self.config_digest = sha256_digest(self.config_bytes)
        self.manifest_bytes = make_manifest(self.config_bytes, [(self.layer_digest, self.layer_size)])
        self.manifest_digest = sha256_digest(self.manifest_bytes)
        self.blob_gets: dict[str, int] = {}
        self.manifest_gets = 0
        self.requests: list[tuple[str, str]] = []  # (method, path_qs)

        app = web.Application()
        app.router.add_route("GET", "/v2/", self._base)
        app.router.add_route("*", "/v2/{repo:.+}/manifests/{ref}", self._manifest)
        app.router.add_route("*", "/v2/{repo:.+}/blobs/{digest}", self._blob)
        self._server = BackgroundApp(app, name=f"e2e-faulty-upstream-{mode}")
        self.url = self._server.url
        self.host = self._server.host

    def stop(self) -> None:
        self._server.stop()

    @staticmethod
    def _error(status: int, code: str) -> web.Response:
        body = {"errors": [{"code": code, "message": code.lower()}]}
        return web.json_response(body, status=status, headers=API_HEADER)

    async def _base(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path_qs))
        return web.json_response({}, headers=API_HEADER)

    async def _manifest(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path_qs))
        if request.method not in ("GET", "HEAD"):
            return self._error(405, "UNSUPPORTED")
        if request.match_info["repo"] != self.REPO or request.match_info["ref"] not in (self.TAG, self.manifest_digest):
            return self._error(404, "MANIFEST_UNKNOWN")
        if request.method == "GET":
            self.manifest_gets += 1
        headers = {**API_HEADER, "Content-Type": MT_MANIFEST, "Docker-Content-Digest": self.manifest_digest}
        return web.Response(body=self.manifest_bytes, headers=headers)

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        digest = request.match_info["digest"]
        blobs = {self.config_digest: self.config_bytes, self.layer_digest: self.layer_bytes}
        if request.match_info["repo"] != self.REPO or digest not in blobs:
            return self._error(404, "BLOB_UNKNOWN")
        if request.method not in ("GET", "HEAD"):
            return self._error(405, "UNSUPPORTED")
        data = blobs[digest]
        headers = {**API_HEADER, "Content-Type": "application/octet-stream", "Docker-Content-Digest": digest}
        if request.method == "HEAD":
            return web.Response(headers={**headers, "Content-Length": str(len(data))})
        self.blob_gets[digest] = self.blob_gets.get(digest, 0) + 1
        if digest != self.layer_digest or self.mode == "ok":
            return web.Response(body=data, headers=headers)
        if self.mode == "wrong":
            return web.Response(body=self.wrong_bytes, headers=headers)
        response = web.StreamResponse(headers=headers)
        response.content_length = len(data)
        await response.prepare(request)
        if self.mode == "truncate":
            await response.write(data[: len(data) // 2])
            assert request.transport is not None
            # close() flushes what was written, then FIN: the client sees a
            # short body against the announced Content-Length.
            request.transport.close()
            return response
        for start in range(0, len(data), self.piece):  # slow
            await response.write(data[start : start + self.piece])
            await asyncio.sleep(self.delay)
        await response.write_eof()
        return response
