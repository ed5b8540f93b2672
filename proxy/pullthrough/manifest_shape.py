"""Which upstream answers are manifests: a registered media type, and a JSON body of that type's shape.

Whatever passes here is cached and served from the proxy's own origin with
the type returned, so nothing else may: not ``text/html``, not a gzip stream,
not a body whose ``mediaType`` contradicts its ``Content-Type``, and not an
image manifest that is also an index (CVE-2021-41190), which two clients
could read as two different images under one digest.
"""

from __future__ import annotations

import json
from typing import Any

from proxy.errors import ErrorCode, RegistryError

__all__ = ["DOCKER_LIST", "DOCKER_MANIFEST", "MANIFEST_TYPES", "OCI_INDEX", "OCI_MANIFEST", "SCHEMA1",
           "SCHEMA1_SIGNED", "head_media_type", "manifest_media_type"]

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
# Docker schema 1, still served by distribution for images pushed long ago: passed through as they are.
SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"

_IMAGE = frozenset({DOCKER_MANIFEST, OCI_MANIFEST})
_INDEX = frozenset({DOCKER_LIST, OCI_INDEX})
_SCHEMA1 = frozenset({SCHEMA1_SIGNED, SCHEMA1})
MANIFEST_TYPES = _IMAGE | _INDEX | _SCHEMA1

# Types that say nothing about the body: the body's own mediaType decides.
_GENERIC = frozenset({"", "application/json", "text/plain", "application/octet-stream"})
_GZIP = b"\x1f\x8b"


def head_media_type(content_type: str | None) -> str | None:
    """The registered type a HEAD answer names, or None: then only a GET and this module's check can tell."""
    found = _bare(content_type)
    return found if found in MANIFEST_TYPES else None


def manifest_media_type(content_type: str | None, body: bytes, *, upstream: str) -> str:
    """The registered media type of ``body``; a MANIFEST_INVALID error naming ``upstream`` if it is not a manifest."""
    declared = _bare(content_type)
    if declared not in MANIFEST_TYPES and declared not in _GENERIC:
        raise _invalid(upstream, f"a {declared[:80]!r} answer, which is not a manifest media type")
    document = _document(body, upstream)
    own = document.get("mediaType")
    if own is not None and not isinstance(own, str):
        raise _invalid(upstream, "a manifest whose mediaType is not a string")
    if declared in MANIFEST_TYPES:
        if own is not None and own != declared:
            raise _invalid(upstream, f"a manifest of type {own[:80]!r} served as {declared!r}")
        media_type = declared
    elif own is not None:
        if own not in MANIFEST_TYPES:
            raise _invalid(upstream, f"a manifest of type {own[:80]!r}, which is not a manifest media type")
        media_type = own
    elif document.get("schemaVersion") == 1:
        # Old registries served schema 1 as application/json; its signature tells the two apart.
        media_type = SCHEMA1_SIGNED if "signatures" in document else SCHEMA1
    else:
        raise _invalid(upstream, f"a manifest with no mediaType, served as {declared or 'no type'!r}")
    problem = _shape_problem(media_type, document)
    if problem is not None:
        raise _invalid(upstream, f"a manifest of type {media_type} that {problem}")
    return media_type


def _bare(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _document(body: bytes, upstream: str) -> dict[str, Any]:
    if body.startswith(_GZIP):
        raise _invalid(upstream, "a gzip-compressed body as a manifest")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise _invalid(upstream, "a manifest that is not JSON") from None
    if not isinstance(document, dict):
        raise _invalid(upstream, "a manifest that is not a JSON object")
    return document


def _shape_problem(media_type: str, document: dict[str, Any]) -> str | None:
    version = document.get("schemaVersion")
    if media_type in _SCHEMA1:
        if version != 1 or not _list_of_objects(document.get("fsLayers")):
            return "is not schemaVersion 1 with a list of fsLayers"
        return _none_of(document, "layers", "manifests", "config")
    if version != 2 or isinstance(version, bool):
        return "is not schemaVersion 2"
    if media_type in _IMAGE:
        if not isinstance(document.get("config"), dict) or not _list_of_objects(document.get("layers")):
            return "lacks a config object or a list of layers"
        return _none_of(document, "manifests")
    if not _list_of_objects(document.get("manifests")):
        return "lacks a list of manifests"
    return _none_of(document, "layers", "config")


def _none_of(document: dict[str, Any], *fields: str) -> str | None:
    present = [name for name in fields if name in document]
    return f"also has {' and '.join(present)}" if present else None


def _list_of_objects(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


def _invalid(upstream: str, what: str) -> RegistryError:
    return RegistryError(ErrorCode.MANIFEST_INVALID, f"upstream {upstream} sent {what}; refused, not cached")
