"""OCI artifacts through the proxy with a real OCI client (oras) and a real registry.

distribution 2.8 has no referrers API, as many registries still do not: a
client that pushes a referrer there keeps the list under the fallback tag
``sha256-<hex>`` of its subject (distribution spec 1.1, "Referrers Tag
Schema"). Through the proxy the referrers path must answer 404, so that
clients look for that tag, and the tag must pull like any other. The
referrers API of a 1.1 upstream is in tests/unit/test_engine_referrers_http.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import oras.oci
import oras.provider

from .http import get
from .images import MT_INDEX, MT_MANIFEST, build_image, push
from .proxyproc import ProxyFactory
from .test_pull import mapped
from .upstream import Upstream

EMPTY = "application/vnd.oci.empty.v1+json"
SIGNATURE = "application/vnd.dev.cosign.artifact.sig.v1+json"
SBOM_CONFIG = "application/vnd.example.sbom.config.v1+json"
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def oras_client(host: str) -> oras.provider.Registry:
    return oras.provider.Registry(hostname=host, insecure=True)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def pushed_digest(response: Any) -> str:
    assert response.status_code == 201, response.text
    # distribution answers OCI-Subject only when it implements referrers; 2.8 does not.
    assert "OCI-Subject" not in response.headers
    return str(response.headers["Docker-Content-Digest"])


def push_signature(client: oras.provider.Registry, ref: str, subject: oras.oci.Subject, tmp: Path) -> dict[str, Any]:
    """An artifact as cosign and notation make them: its own artifactType, the empty config, one layer."""
    container = client.get_container(ref)
    config = {"mediaType": EMPTY, "digest": digest_of(b"{}"), "size": 2}
    payload = b'{"critical": {"image": {"docker-manifest-digest": "%s"}}}' % subject.digest.encode()
    layer = {"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": digest_of(payload),
             "size": len(payload)}
    for blob, descriptor in ((write(tmp / "empty.json", b"{}"), config), (write(tmp / "sig", payload), layer)):
        assert client.upload_blob(str(blob), container, descriptor).status_code in (200, 201, 202)
    manifest = {"schemaVersion": 2, "mediaType": MT_MANIFEST, "artifactType": SIGNATURE, "config": config,
                "layers": [layer], "subject": asdict(subject)}
    response = client.upload_manifest(manifest, container)
    return {"mediaType": MT_MANIFEST, "digest": pushed_digest(response), "size": len(response.request.body),
            "artifactType": SIGNATURE}


def push_sbom(client: oras.provider.Registry, ref: str, subject: oras.oci.Subject, tmp: Path) -> dict[str, Any]:
    """An artifact typed by its config, pushed by oras's own push."""
    sbom = write(tmp / "sbom.spdx.json", b'{"spdxVersion": "SPDX-2.3", "name": "app"}')
    config = write(tmp / "sbom-config.json", b'{"tool": "e2e"}')
    response = client.push(target=ref, files=[f"{sbom}:application/spdx+json"], subject=subject,
                           manifest_config=f"{config}:{SBOM_CONFIG}", disable_path_validation=True, quiet=True)
    return {"mediaType": MT_MANIFEST, "digest": pushed_digest(response), "size": len(response.request.body),
            "artifactType": SBOM_CONFIG}


def test_referrers_of_a_registry_without_the_api_are_found_through_the_fallback_tag(
        plain_upstream: Upstream, oci_layout: Path, make_proxy: ProxyFactory, tmp_path: Path) -> None:
    image = build_image(oci_layout, "1")
    push(plain_upstream, oci_layout, "1", "org/app")
    subject = oras.oci.Subject(mediaType=MT_MANIFEST, digest=image.manifest_digest, size=len(image.manifest_bytes))
    upstream_client = oras_client(plain_upstream.host)
    referrers = [push_signature(upstream_client, f"{plain_upstream.host}/org/app:signature", subject, tmp_path),
                 push_sbom(upstream_client, f"{plain_upstream.host}/org/app:sbom", subject, tmp_path)]
    # What a 1.1 client does next on a registry without the API: the list, under the fallback tag.
    fallback_tag = image.manifest_digest.replace(":", "-")
    fallback = json.dumps({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": referrers}).encode()
    status, _, body = plain_upstream.request("PUT", f"/v2/org/app/manifests/{fallback_tag}", data=fallback,
                                             headers={"Content-Type": MT_INDEX})
    assert status == 201, body
    assert plain_upstream.request("GET", f"/v2/org/app/referrers/{image.manifest_digest}")[0] == 404
    proxy = make_proxy(mapped("quay.io", plain_upstream))

    # The referrers API answers as a registry without it does, so clients look for the tag.
    reply = get(proxy.host, f"/v2/quay.io/org/app/referrers/{image.manifest_digest}")
    # Any 404 but NAME_UNKNOWN: oras-go and notation read that one as a missing repository, and do not fall back.
    assert (reply.status, reply.error_codes) == (404, ["MANIFEST_UNKNOWN"]), reply.body
    assert fallback_tag in reply.error_message
    assert plain_upstream.wait_requests("GET", f"/referrers/{image.manifest_digest}", at_least=2) == 2

    # The fallback tag is an ordinary tag: fetched once, then from the cache.
    client = oras_client(proxy.host)
    for _ in range(2):
        index = client.get_manifest(f"{proxy.host}/quay.io/org/app:{fallback_tag}")
        assert index == json.loads(fallback)
    assert plain_upstream.wait_requests("GET", f"/manifests/{fallback_tag}") == 1
    assert get(proxy.host, f"/v2/quay.io/org/app/manifests/{fallback_tag}").headers["x-registry-proxy-cache"] == "hit"

    # And what it lists pulls through, each artifact as pushed.
    signature = client.get_manifest(f"{proxy.host}/quay.io/org/app@{referrers[0]['digest']}")
    assert (signature["artifactType"], signature["config"]["mediaType"]) == (SIGNATURE, EMPTY)
    assert signature["subject"]["digest"] == image.manifest_digest
    pulled = client.pull(target=f"{proxy.host}/quay.io/org/app@{referrers[1]['digest']}",
                         outdir=str(tmp_path / "sbom-out"))
    assert [Path(p).read_bytes() for p in pulled] == [(tmp_path / "sbom.spdx.json").read_bytes()]


def helm_chart(name: str, version: str) -> bytes:
    """A chart archive as `helm package` writes it: <name>/Chart.yaml and a template, gzipped."""
    files = {f"{name}/Chart.yaml": f"apiVersion: v2\nname: {name}\nversion: {version}\n".encode(),
             f"{name}/templates/configmap.yaml": b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: e2e\n"}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_a_helm_chart_stored_as_an_oci_artifact_pulls_through(
        plain_upstream: Upstream, make_proxy: ProxyFactory, tmp_path: Path) -> None:
    chart = write(tmp_path / "mychart-0.1.0.tgz", helm_chart("mychart", "0.1.0"))
    config = write(tmp_path / "config.json", b'{"name":"mychart","version":"0.1.0","apiVersion":"v2"}')
    oras_client(plain_upstream.host).push(
        target=f"{plain_upstream.host}/charts/mychart:0.1.0", files=[f"{chart}:{HELM_CHART}"],
        manifest_config=f"{config}:{HELM_CONFIG}", disable_path_validation=True, quiet=True)
    proxy = make_proxy(mapped("quay.io", plain_upstream))

    client = oras_client(proxy.host)
    ref = f"{proxy.host}/quay.io/charts/mychart:0.1.0"
    manifest = client.get_manifest(ref)
    assert manifest["config"]["mediaType"] == HELM_CONFIG
    assert [layer["mediaType"] for layer in manifest["layers"]] == [HELM_CHART]
    pulled = client.pull(target=ref, outdir=str(tmp_path / "out"))
    assert [Path(p).read_bytes() for p in pulled] == [chart.read_bytes()]
    # helm reads the config too.
    client.download_blob(ref, manifest["config"]["digest"], str(tmp_path / "out" / "config.json"))
    assert (tmp_path / "out" / "config.json").read_bytes() == config.read_bytes()
    for digest in (manifest["config"]["digest"], manifest["layers"][0]["digest"]):
        assert plain_upstream.wait_requests("GET", f"/blobs/{digest}") == 1
