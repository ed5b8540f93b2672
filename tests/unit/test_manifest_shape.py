"""What counts as a manifest: a registered media type that agrees with the body, and that type's shape."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from proxy.errors import ErrorCode, RegistryError
from proxy.pullthrough.manifest_shape import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    SCHEMA1,
    SCHEMA1_SIGNED,
    head_media_type,
    manifest_media_type,
)

DESCRIPTOR = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "a" * 64, "size": 2}
IMAGE = {"schemaVersion": 2, "config": DESCRIPTOR, "layers": [DESCRIPTOR]}
INDEX = {"schemaVersion": 2, "manifests": [DESCRIPTOR]}
SCHEMA1_BODY = {"schemaVersion": 1, "name": "app", "tag": "1", "fsLayers": [{"blobSum": "sha256:" + "a" * 64}],
                "history": []}


def body(document: Any) -> bytes:
    return json.dumps(document).encode()


def refusal(content_type: str | None, data: bytes) -> str:
    with pytest.raises(RegistryError) as caught:
        manifest_media_type(content_type, data, upstream="up.example")
    assert caught.value.code is ErrorCode.MANIFEST_INVALID
    assert "up.example" in str(caught.value)
    return str(caught.value)


@pytest.mark.parametrize(("media_type", "document"), [
    (DOCKER_MANIFEST, {**IMAGE, "mediaType": DOCKER_MANIFEST}),
    (DOCKER_LIST, {**INDEX, "mediaType": DOCKER_LIST}),
    (OCI_MANIFEST, {**IMAGE, "mediaType": OCI_MANIFEST}),
    (OCI_INDEX, {**INDEX, "mediaType": OCI_INDEX}),
    # OCI lets the body leave mediaType out: the Content-Type decides.
    (OCI_MANIFEST, IMAGE),
    (OCI_INDEX, INDEX),
    (SCHEMA1_SIGNED, {**SCHEMA1_BODY, "signatures": []}),
    (SCHEMA1, SCHEMA1_BODY),
])
def test_the_registered_types_in_their_shape_pass(media_type: str, document: dict[str, Any]) -> None:
    assert manifest_media_type(media_type, body(document), upstream="up.example") == media_type
    assert manifest_media_type(f"{media_type}; charset=utf-8", body(document), upstream="up.example") == media_type


EMPTY = {"mediaType": "application/vnd.oci.empty.v1+json",
         "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "size": 2, "data": "e30="}
SUBJECT = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "b" * 64, "size": 500}
ARTIFACTS = {
    # cosign and notation: an artifactType of their own, the empty config, a subject.
    "signature": {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.cncf.notary.signature",
                  "config": EMPTY, "layers": [{**DESCRIPTOR, "mediaType": "application/jose+json"}],
                  "subject": SUBJECT, "annotations": {"io.cncf.notary.x509chain.thumbprint#S256": "[]"}},
    # Content-free, as the image spec suggests: the empty descriptor as its one layer.
    "empty-layer": {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example+type",
                    "config": EMPTY, "layers": [EMPTY], "subject": SUBJECT},
    "helm-chart": {"schemaVersion": 2, "config": {**DESCRIPTOR, "mediaType": "application/vnd.cncf.helm.config.v1+json"},
                   "layers": [{**DESCRIPTOR, "mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip"}]},
    "no-layers": {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {**DESCRIPTOR, "mediaType": "x/y"},
                  "layers": []},
    "index-of-artifacts": {"schemaVersion": 2, "mediaType": OCI_INDEX, "artifactType": "application/vnd.example+type",
                           "manifests": [DESCRIPTOR], "subject": SUBJECT},
    "referrers-list": {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {**DESCRIPTOR, "mediaType": OCI_MANIFEST, "artifactType": "application/spdx+json"}]},
}


@pytest.mark.parametrize("name", sorted(ARTIFACTS))
def test_oci_artifact_manifests_pass_with_any_config_type_artifact_type_and_subject(name: str) -> None:
    document = ARTIFACTS[name]
    media_type = OCI_INDEX if "manifests" in document else OCI_MANIFEST
    assert manifest_media_type(media_type, body(document), upstream="up.example") == media_type
    if "mediaType" in document:
        assert manifest_media_type("application/json", body(document), upstream="up.example") == media_type


@pytest.mark.parametrize("generic", [None, "", "application/json", "text/plain; charset=utf-8",
                                     "application/octet-stream"])
def test_a_generic_content_type_takes_the_bodys_registered_type(generic: str | None) -> None:
    assert manifest_media_type(generic, body({**IMAGE, "mediaType": DOCKER_MANIFEST}), upstream="u") == DOCKER_MANIFEST
    assert manifest_media_type(generic, body({**SCHEMA1_BODY, "signatures": []}), upstream="u") == SCHEMA1_SIGNED
    assert "text/html" in refusal(generic, body({**IMAGE, "mediaType": "text/html"}))
    assert "no mediaType" in refusal(generic, body(IMAGE))
    # The derived type must fit the shape too.
    assert "also has layers" in refusal(generic, body({**INDEX, "mediaType": OCI_INDEX, "layers": []}))


@pytest.mark.parametrize(("content_type", "data", "said"), [
    ("text/html", b"<html><script>alert(1)</script></html>", "'text/html'"),
    ("text/html", body({**IMAGE, "mediaType": OCI_MANIFEST}), "'text/html'"),
    ("image/svg+xml", body(IMAGE), "not a manifest media type"),
    # CVE-2021-41190: an image manifest that is also an index.
    (OCI_MANIFEST, body({**IMAGE, "mediaType": OCI_MANIFEST, "manifests": [DESCRIPTOR]}), "also has manifests"),
    (OCI_MANIFEST, body({**IMAGE, "manifests": [DESCRIPTOR]}), "also has manifests"),
    (OCI_INDEX, body({**INDEX, "layers": [DESCRIPTOR]}), "also has layers"),
    (OCI_INDEX, body({**INDEX, "config": DESCRIPTOR}), "also has config"),
    (DOCKER_LIST, body({**INDEX, "mediaType": DOCKER_LIST, "layers": []}), "also has layers"),
    (OCI_INDEX, body({**IMAGE, "mediaType": DOCKER_MANIFEST}), "served as"),
    (DOCKER_MANIFEST, body({**IMAGE, "mediaType": OCI_MANIFEST}), "served as"),
    (OCI_MANIFEST, body({**IMAGE, "mediaType": 7}), "not a string"),
    (OCI_MANIFEST, gzip.compress(body(IMAGE)), "gzip"),
    (OCI_MANIFEST, b"schemaVersion: 2", "not JSON"),
    (OCI_MANIFEST, b"\xff\xfe{}", "not JSON"),
    (OCI_MANIFEST, b"[" * 100_000, "not JSON"),
    (OCI_MANIFEST, b"[]", "not a JSON object"),
    (OCI_MANIFEST, body({"schemaVersion": 2, "layers": []}), "lacks a config"),
    (OCI_MANIFEST, body({"schemaVersion": 2, "config": DESCRIPTOR, "layers": ["x"]}), "lacks a config"),
    (OCI_MANIFEST, body({**IMAGE, "schemaVersion": 3}), "schemaVersion 2"),
    (OCI_MANIFEST, body({**IMAGE, "schemaVersion": True}), "schemaVersion 2"),
    (OCI_INDEX, body({"schemaVersion": 2}), "lacks a list of manifests"),
    (SCHEMA1, body({"schemaVersion": 1}), "fsLayers"),
    (SCHEMA1_SIGNED, body({**SCHEMA1_BODY, "layers": []}), "also has layers"),
])
def test_bad_shapes_are_refused_naming_the_upstream(content_type: str, data: bytes, said: str) -> None:
    assert said in refusal(content_type, data)


def test_a_head_answer_counts_only_with_a_registered_type() -> None:
    for media_type in MANIFEST_TYPES:
        assert head_media_type(f"{media_type}; charset=utf-8") == media_type
    for other in (None, "", "text/html", "application/json", "application/octet-stream"):
        assert head_media_type(other) is None
