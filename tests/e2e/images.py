"""Generate OCI images on disk (OCI image layout) and push them with skopeo.

Images are made by the tests themselves so the suite needs no network. Layer
content is random unless a `seed` is given; then every byte, and so every
digest, is reproducible.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import tarfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from .tools import skopeo_ok

if TYPE_CHECKING:
    from .upstream import Upstream

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
REF_NAME = "org.opencontainers.image.ref.name"

Platform = tuple[str, ...]  # (os, architecture) or (os, architecture, variant)


@dataclass
class ImageInfo:
    manifest_digest: str
    manifest_bytes: bytes
    config_digest: str
    layers: list[tuple[str, int]]  # (digest, size) of each layer blob
    config_bytes: bytes = b""
    platform: Platform = ("linux", "amd64")
    layer_media_type: str = MT_LAYER_GZIP
    diff_ids: list[str] = field(default_factory=list)

    @property
    def blob_digests(self) -> list[str]:
        """Config first, then layers: every blob a full pull fetches."""
        return [self.config_digest, *(digest for digest, _ in self.layers)]


class _Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


class _HashWriter:
    """Hashes and counts what passes through, so nothing is read back later."""

    def __init__(self, inner: _Writable) -> None:
        self.inner = inner
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        self.inner.write(data)
        return len(data)

    def flush(self) -> None:
        pass  # GzipFile wants a flushable target; the real file is flushed on close

    def tell(self) -> int:
        # tarfile's non-stream "w" mode asks for the start offset once.
        return self.size

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha.hexdigest()


class _Content(io.RawIOBase):
    """File-like source of `size` bytes, random or seeded, made on demand.

    Generated chunk by chunk so a 200 MB layer never sits in memory.
    """

    def __init__(self, size: int, seed: bytes | None) -> None:
        super().__init__()
        self.left = size
        self.rng = None if seed is None else random.Random(hashlib.sha256(seed).digest())

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        if n == 0:
            return b""
        return os.urandom(n) if self.rng is None else self.rng.randbytes(n)


def _write_layer(out: _Writable, size: int, seed: bytes | None, name: str, compressed: bool) -> tuple[str, int, str]:
    """Write one valid layer tar to `out`; return (digest, size, diff_id)."""
    outer = _HashWriter(out)
    gz: gzip.GzipFile | None = None
    if compressed:
        # mtime=0 and no file name keep the gzip header reproducible;
        # level 1 because random data does not compress anyway.
        gz = gzip.GzipFile(filename="", mode="wb", fileobj=outer, mtime=0, compresslevel=1)
        inner = _HashWriter(gz)
    else:
        inner = outer
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uname = info.gname = "root"
    # Large copy chunks: the default 16 KiB makes a 200 MB layer CPU-bound in Python.
    tar = tarfile.TarFile(fileobj=inner, mode="w", format=tarfile.PAX_FORMAT, copybufsize=1 << 20)  # type: ignore[arg-type]
    with tar, _Content(size, seed) as content:
        tar.addfile(info, content)
    if gz is not None:
        gz.close()
    return outer.digest, outer.size, inner.digest


def make_layer(size: int, seed: bytes | None = None, *, compressed: bool = True) -> tuple[bytes, str]:
    """An in-memory layer blob and its diff_id (for small fakes only)."""
    buf = io.BytesIO()
    _, _, diff_id = _write_layer(buf, size, seed, "data/blob.bin", compressed)
    return buf.getvalue(), diff_id


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _platform_fields(platform: Platform) -> dict[str, str]:
    fields = {"architecture": platform[1], "os": platform[0]}
    if len(platform) > 2:
        fields["variant"] = platform[2]
    return fields


def make_config(platform: Platform, diff_ids: list[str], *, nonce: str | None = None) -> bytes:
    """A valid OCI image config; `nonce` makes otherwise equal configs differ."""
    config: dict[str, Any] = {
        "created": "1970-01-01T00:00:00Z",
        **_platform_fields(platform),
        "config": {"Cmd": ["/data/run"], "Labels": {"org.e2e.nonce": nonce or "fixed"}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": f"e2e layer {i}"} for i in range(len(diff_ids))],
    }
    return _dumps(config)


def make_manifest(config_bytes: bytes, layers: list[tuple[str, int]], layer_media_type: str = MT_LAYER_GZIP) -> bytes:
    return _dumps(
        {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": sha256_digest(config_bytes), "size": len(config_bytes)},
            "layers": [{"mediaType": layer_media_type, "digest": d, "size": s} for d, s in layers],
        }
    )


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _blob_dir(layout: Path) -> Path:
    path = layout / "blobs" / "sha256"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _put_blob(layout: Path, data: bytes) -> str:
    digest = sha256_digest(data)
    (_blob_dir(layout) / digest.removeprefix("sha256:")).write_bytes(data)
    return digest


def _build_image_blobs(
    layout: Path, layer_sizes: list[int], platform: Platform, seed: bytes | None, uncompressed: bool
) -> ImageInfo:
    blobs = _blob_dir(layout)
    layers: list[tuple[str, int]] = []
    diff_ids: list[str] = []
    for index, size in enumerate(layer_sizes):
        layer_seed = None if seed is None else seed + b"/" + "/".join(platform).encode() + b"/%d" % index
        # Written under a temporary name because the digest is known only at the end.
        tmp = blobs / f".tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as fh:
            digest, blob_size, diff_id = _write_layer(fh, size, layer_seed, f"data/layer-{index}.bin", not uncompressed)
        tmp.replace(blobs / digest.removeprefix("sha256:"))
        layers.append((digest, blob_size))
        diff_ids.append(diff_id)
    nonce = None if seed is not None else uuid.uuid4().hex
    config_bytes = make_config(platform, diff_ids, nonce=nonce)
    config_digest = _put_blob(layout, config_bytes)
    media_type = MT_LAYER_TAR if uncompressed else MT_LAYER_GZIP
    manifest_bytes = make_manifest(config_bytes, layers, media_type)
    manifest_digest = _put_blob(layout, manifest_bytes)
    return ImageInfo(
        manifest_digest, manifest_bytes, config_digest, layers, config_bytes, platform, media_type, diff_ids
    )


def _tag(layout: Path, tag: str, media_type: str, digest: str, size: int) -> None:
    """Point `tag` at a blob in index.json, replacing an earlier use of the tag."""
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    index_path = layout / "index.json"
    index: dict[str, Any] = {"schemaVersion": 2, "manifests": []}
    if index_path.exists():
        index = json.loads(index_path.read_text())
    kept = [m for m in index.get("manifests", []) if m.get("annotations", {}).get(REF_NAME) != tag]
    kept.append({"mediaType": media_type, "digest": digest, "size": size, "annotations": {REF_NAME: tag}})
    index["manifests"] = kept
    index_path.write_text(json.dumps(index, indent=1))


def build_image(
    layout: Path,
    tag: str,
    *,
    layer_sizes: list[int] | None = None,
    platform: Platform = ("linux", "amd64"),
    seed: bytes | None = None,
    uncompressed: bool = False,
) -> ImageInfo:
    """Write one single-platform image into the layout under `tag`.

    Each layer is a tar holding one file of `size` content bytes (the blob is
    a bit larger: tar headers, gzip framing).
    """
    sizes = [4096] if layer_sizes is None else layer_sizes
    info = _build_image_blobs(layout, sizes, platform, seed, uncompressed)
    _tag(layout, tag, MT_MANIFEST, info.manifest_digest, len(info.manifest_bytes))
    return info


def build_index(
    layout: Path,
    tag: str,
    platforms: list[tuple[str, str]],
    *,
    layer_sizes: list[int] | None = None,
    seed: bytes | None = None,
) -> tuple[str, bytes, list[ImageInfo]]:
    """Write a multi-arch OCI index under `tag`; one distinct image per platform."""
    sizes = [4096] if layer_sizes is None else layer_sizes
    images = [_build_image_blobs(layout, sizes, platform, seed, False) for platform in platforms]
    index_bytes = _dumps(
        {
            "schemaVersion": 2,
            "mediaType": MT_INDEX,
            "manifests": [
                {
                    "mediaType": MT_MANIFEST,
                    "digest": image.manifest_digest,
                    "size": len(image.manifest_bytes),
                    "platform": _platform_fields(image.platform),
                }
                for image in images
            ],
        }
    )
    index_digest = _put_blob(layout, index_bytes)
    _tag(layout, tag, MT_INDEX, index_digest, len(index_bytes))
    return index_digest, index_bytes, images


def layout_digest(layout: Path, tag: str) -> str:
    """Digest that index.json points `tag` at."""
    for entry in json.loads((layout / "index.json").read_text())["manifests"]:
        if entry.get("annotations", {}).get(REF_NAME) == tag:
            return str(entry["digest"])
    raise KeyError(f"tag {tag!r} not in {layout}")


def read_blob(layout: Path, digest: str) -> BinaryIO:
    return open(layout / "blobs" / "sha256" / digest.removeprefix("sha256:"), "rb")


def push(
    upstream: Upstream,
    layout: Path,
    tag: str,
    repo: str,
    *,
    all_platforms: bool = False,
    creds: str | None = None,
) -> str:
    """Copy `tag` from the layout to `upstream` as repo:tag; return the manifest digest.

    `--preserve-digests` makes skopeo fail rather than rewrite the manifest
    (tests compare exact bytes). With `creds=None` the upstream's seeding
    credentials are used, if it has any. After the copy the registry is asked
    for the manifest and its digest must match the layout's.
    """
    creds = creds or upstream.push_creds
    args = ["copy", "--quiet", "--preserve-digests", "--retry-times=0"]
    if all_platforms:
        args.append("--all")
    args += upstream.skopeo_flags("dest", creds)
    skopeo_ok(*args, f"oci:{layout}:{tag}", f"docker://{upstream.host}/{repo}:{tag}")
    expected = layout_digest(layout, tag)
    raw = upstream.inspect_raw(repo, tag, creds=creds)
    got = sha256_digest(raw)
    assert got == expected, f"{upstream.host}/{repo}:{tag} serves {got}, layout has {expected}"
    return expected
