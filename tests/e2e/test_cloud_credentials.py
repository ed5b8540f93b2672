"""ECR and GCR credentials minted and renewed by the proxy, against local stand-ins of the clouds."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import pytest

from .admin import Admin, new_token
from .cloud import AWS_ISOLATION, ECR, GAR, FakeEcr, google_account
from .http import gather_gets, get
from .proxyproc import ProxyFactory, ProxyProcess
from .tokenserver import TokenServer
from .upstream import Upstream

SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/" + secrets.token_urlsafe(12)




def start(make_proxy: ProxyFactory, upstream: Upstream, address: str) -> tuple[ProxyProcess, Admin]:
    token = new_token()
    proxy = make_proxy({"cache": {"tag_ttl": "0s"}, "registries": [{"address": address, "endpoint": upstream.url}]},
                       env={"REGISTRY_PROXY_ADMIN_TOKEN": token, **AWS_ISOLATION})
    return proxy, Admin(proxy.host, token)


def ecr_fixture(short_tokens: TokenServer, lifetime: float) -> FakeEcr:
    return FakeEcr(lambda password, _expires: short_tokens.set_login("AWS", password), lifetime=lifetime)


def add_ecr(admin: Admin, fake: FakeEcr, **extra: object) -> dict[str, object]:
    reply = admin.call("POST", "/registries", {"address": ECR, "kind": "ecr", "access_key_id": fake.access_key_id,
                                               "secret_access_key": SECRET_KEY, "aws_endpoint_url": fake.url,
                                               **extra})
    assert reply.status == 201, reply.body
    return dict(reply.json())


def test_ecr_token_is_minted_and_renewed_before_it_expires(registry: Upstream, short_tokens: TokenServer,
                                                           make_proxy: ProxyFactory) -> None:
    fake = ecr_fixture(short_tokens, lifetime=4)
    try:
        proxy, admin = start(make_proxy, registry, ECR)
        cred = add_ecr(admin, fake)
        path = f"/v2/{ECR}/private/app/manifests/1"
        assert get(proxy.host, path).status == 200
        assert fake.mints == 1
        assert fake.calls[0]["body"] == {"registryIds": ["123456789012"]}
        assert fake.calls[0]["signed_by"] == fake.access_key_id

        time.sleep(3.3)  # past three quarters of the lifetime, before the end
        assert get(proxy.host, path).status == 200  # with the current token, renewal starts behind it
        deadline = time.monotonic() + 5
        while fake.mints < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fake.mints == 2
        # The registry now accepts only the new password, and the pull uses it.
        assert get(proxy.host, path).status == 200

        view = admin.ok("GET", f"/registries/{cred['id']}")
        assert view["kind"] == "ecr" and view["token"]["last_result"] == "ok"
        assert view["token"]["expires_at"] and view["token"]["next_refresh"]
        seen = json.dumps([r.json() for r in admin.replies if r.body]) + proxy.log_text()
        assert SECRET_KEY not in seen
        assert all(password not in seen for password in short_tokens.users.values())
    finally:
        fake.stop()


def test_fifty_concurrent_pulls_around_expiry_share_one_mint(registry: Upstream, short_tokens: TokenServer,
                                                             make_proxy: ProxyFactory) -> None:
    fake = ecr_fixture(short_tokens, lifetime=8)
    try:
        proxy, admin = start(make_proxy, registry, ECR)
        add_ecr(admin, fake)
        assert get(proxy.host, f"/v2/{ECR}/private/app/manifests/1").status == 200
        time.sleep(6.3)  # due for renewal
        before = fake.mints
        # Fifty different requests, so only the credential is shared between them.
        urls = [f"{proxy.url}/v2/{ECR}/private/app/blobs/sha256:{secrets.token_hex(32)}" for _ in range(50)]
        results = gather_gets(urls)
        assert all(r.status == 404 for r in results), [r.status for r in results]
        time.sleep(1.0)  # the renewal runs behind the pulls
        assert fake.mints - before == 1
    finally:
        fake.stop()


def test_failing_mint_keeps_the_last_token_until_it_expires(registry: Upstream, short_tokens: TokenServer,
                                                            make_proxy: ProxyFactory) -> None:
    fake = ecr_fixture(short_tokens, lifetime=8)
    try:
        proxy, admin = start(make_proxy, registry, ECR)
        # A margin of 6 s: renewal is due 2 s after minting.
        cred = add_ecr(admin, fake, renew_margin=6)
        path = f"/v2/{ECR}/private/app/manifests/1"
        minted_at = time.monotonic()
        assert get(proxy.host, path).status == 200
        fake.fail = True
        time.sleep(2.3)
        assert get(proxy.host, path).status == 200  # renewal due; it fails behind this pull
        deadline = time.monotonic() + 5
        while admin.ok("GET", f"/registries/{cred['id']}")["token"]["failures"] == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        token = admin.ok("GET", f"/registries/{cred['id']}")["token"]
        assert token["failures"] >= 1 and token["last_result"].startswith("failed: ECR GetAuthorizationToken")
        assert SECRET_KEY not in token["last_result"]
        assert get(proxy.host, path).status == 200  # still the last good token

        time.sleep(max(0.0, minted_at + 8.3 - time.monotonic()))
        short_tokens.set_login("AWS", None)  # expired: ECR refuses it now
        reply = get(proxy.host, path)
        assert reply.status == 401 and reply.error_codes == ["UNAUTHORIZED"]
        assert ECR in reply.error_message
    finally:
        fake.stop()


@pytest.mark.parametrize("mode", ["access_token", "json_key"])
def test_gcr_service_account_key_in_both_modes(registry: Upstream, short_tokens: TokenServer,
                                               make_proxy: ProxyFactory, mode: str) -> None:
    with google_account(short_tokens, mode) as (endpoint, key_json):
        proxy, admin = start(make_proxy, registry, GAR)
        anonymous = get(proxy.host, f"/v2/{GAR}/private/app/manifests/1")
        assert anonymous.status == 401
        cred = admin.call("POST", "/registries", {"address": GAR, "kind": "gcr", "mode": mode, "json_key": key_json})
        assert cred.status == 201, cred.body
        assert cred.json()["client_email"] == "puller@e2e-project.iam.gserviceaccount.com"
        assert get(proxy.host, f"/v2/{GAR}/private/app/manifests/1").status == 200
        if mode == "access_token":
            assert [g["grant_type"] for g in endpoint.grants] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
        else:
            assert endpoint.grants == []
        seen = json.dumps([r.json() for r in admin.replies if r.body]) + proxy.log_text()
        assert "PRIVATE KEY" not in seen and json.loads(key_json)["private_key_id"] not in seen


BAD = [
    ({"address": "quay.io", "kind": "ecr"}, "address", "not an ECR registry address"),
    ({"address": "12345678901.dkr.ecr.us-east-1.amazonaws.com", "kind": "ecr"}, "address", "12-digit"),
    ({"address": ECR, "kind": "ecr", "access_key_id": "AKIAEXAMPLEPROXY0001"}, "secret_access_key", "go together"),
    ({"address": ECR, "kind": "ecr", "role_arn": "admin"}, "role_arn", "arn:aws:iam::"),
    ({"address": ECR, "kind": "ecr", "username": "AWS"}, "username", "does not apply to kind ecr"),
    ({"address": "gcr.example.com", "kind": "gcr"}, "address", "not a Google registry address"),
    ({"address": GAR, "kind": "gcr", "json_key": "{nope"}, "json_key", "not valid JSON"),
    ({"address": GAR, "kind": "gcr", "json_key": json.dumps({"type": "service_account"})}, "json_key",
     "has no client_email"),
    ({"address": GAR, "kind": "gcr", "json_key": json.dumps({"type": "user", "client_email": "a", "private_key": "b",
                                                             "token_uri": "c"})}, "json_key", "not 'service_account'"),
    ({"address": GAR, "kind": "gcr", "mode": "json_key"}, "json_key", "needs the service-account key"),
    ({"address": GAR, "kind": "gcr", "mode": "password"}, "mode", "access_token, json_key"),
    ({"address": GAR, "kind": "azure"}, "kind", "basic, ecr, gcr"),
]


@pytest.mark.parametrize("body,field,message", BAD)
def test_bad_cloud_credentials_are_refused_naming_the_problem(make_proxy: ProxyFactory, body: dict[str, str],
                                                              field: str, message: str) -> None:
    token = new_token()
    admin = Admin(make_proxy({}, env={"REGISTRY_PROXY_ADMIN_TOKEN": token}).host, token)
    reply = admin.call("POST", "/registries", body)
    assert reply.status == 400, reply.body
    assert reply.json()["error"]["field"] == field
    assert message in reply.json()["error"]["message"]
    assert admin.registries() == []


def test_ecr_from_the_config_file(registry: Upstream, short_tokens: TokenServer, make_proxy: ProxyFactory,
                                  tmp_path: Path) -> None:
    fake = ecr_fixture(short_tokens, lifetime=3600)
    try:
        secret_file = tmp_path / "aws-secret"
        secret_file.write_text(SECRET_KEY + "\n")
        token = new_token()
        proxy = make_proxy({"registries": [{
            "address": ECR, "endpoint": registry.url, "kind": "ecr", "access_key_id": fake.access_key_id,
            "secret_access_key_file": str(secret_file), "aws_endpoint_url": fake.url, "renew_margin": "10m"}]},
            env={"REGISTRY_PROXY_ADMIN_TOKEN": token, **AWS_ISOLATION})
        assert get(proxy.host, f"/v2/{ECR}/private/app/manifests/1").status == 200
        [entry] = Admin(proxy.host, token).registries()
        assert (entry["kind"], entry["source"], entry["renew_margin"]) == ("ecr", "config", 600)
        assert entry["token"]["last_result"] == "ok" and fake.mints == 1
        assert SECRET_KEY not in proxy.log_text()
    finally:
        fake.stop()
