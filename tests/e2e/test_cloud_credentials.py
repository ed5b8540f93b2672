"""ECR and GCR credentials minted and renewed by the proxy, against local stand-ins of the clouds."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from .admin import Admin, new_token
from .cloud import AWS_ISOLATION, ECR, GAR, FakeEcr, google_account
from .http import gather_gets, get
from .proxyproc import ProxyFactory, ProxyProcess
from .tokenserver import TokenServer
from .tools import wait_until
from .upstream import Upstream

SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/" + secrets.token_urlsafe(12)

# The renewal policy itself (when, backoff, sharing) is unit-tested with a
# clock of its own in tests/unit/test_minting.py. Here each test proves the
# wiring with a real process, on tokens of a few seconds: the proxy's clock
# is the real one, so the tests wait for the times the proxy itself reports.


def start(make_proxy: ProxyFactory, upstream: Upstream, address: str) -> tuple[ProxyProcess, Admin]:
    token = new_token()
    proxy = make_proxy({"cache": {"tag_ttl": "0s"}, "registries": [{"address": address, "endpoint": upstream.url,
                        "token_realms": upstream.token_realms}]},
                       env={"REGISTRY_PROXY_ADMIN_TOKEN": token, **AWS_ISOLATION})
    return proxy, Admin(proxy.host, token)


def ecr_fixture(short_tokens: TokenServer, lifetime: float) -> FakeEcr:
    return FakeEcr(lambda password, _expires: short_tokens.set_login("AWS", password), lifetime=lifetime)


def minted(proxy: ProxyProcess, admin: Admin) -> dict[str, Any]:
    """The proxy's own account of the ECR token: minted_at, expires_at and next_refresh in epoch seconds."""
    status = get(proxy.host, "/status.json", Authorization=f"Bearer {admin.token}").json()
    [row] = [r for r in status["environments"][0]["registries"] if r["address"] == ECR]
    return dict(row["token"])


def wait_past(stamp: float, what: str) -> None:
    wait_until(lambda: time.time() > stamp, timeout=max(0.0, stamp - time.time()) + 5, what=what)


def add_ecr(admin: Admin, fake: FakeEcr, **extra: object) -> dict[str, object]:
    reply = admin.call("POST", "/registries", {"address": ECR, "kind": "ecr", "access_key_id": fake.access_key_id,
                                               "secret_access_key": SECRET_KEY, "aws_endpoint_url": fake.url,
                                               **extra})
    assert reply.status == 201, reply.body
    return dict(reply.json())


def test_ecr_token_is_minted_and_renewed_before_it_expires(registry: Upstream, short_tokens: TokenServer,
                                                           make_proxy: ProxyFactory) -> None:
    issued: list[tuple[float, float]] = []  # (when, expires) of each ECR password

    def on_mint(password: str, expires: float) -> None:
        issued.append((time.time(), expires))
        short_tokens.set_login("AWS", password)

    fake = FakeEcr(on_mint, lifetime=2)
    try:
        proxy, admin = start(make_proxy, registry, ECR)
        cred = add_ecr(admin, fake, renew_margin=1)
        path = f"/v2/{ECR}/private/app/manifests/1"
        assert get(proxy.host, path).status == 200
        assert fake.mints == 1
        assert fake.calls[0]["body"] == {"registryIds": ["123456789012"]}
        assert fake.calls[0]["signed_by"] == fake.access_key_id

        token = minted(proxy, admin)
        assert token["minted_at"] < token["next_refresh"] < token["expires_at"]
        wait_past(token["next_refresh"], "the renewal to be due")
        assert get(proxy.host, path).status == 200  # with the current token, renewal starts behind it
        wait_until(lambda: fake.mints >= 2, timeout=5, what="the renewal")
        assert fake.mints == 2
        assert issued[1][0] < issued[0][1], "renewed only after the first password had expired"
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
    fake = ecr_fixture(short_tokens, lifetime=2)
    try:
        proxy, admin = start(make_proxy, registry, ECR)
        cred = add_ecr(admin, fake, renew_margin=1)
        assert get(proxy.host, f"/v2/{ECR}/private/app/manifests/1").status == 200
        wait_past(minted(proxy, admin)["next_refresh"], "the renewal to be due")
        before = fake.mints
        # Fifty different requests, so only the credential is shared between them.
        urls = [f"{proxy.url}/v2/{ECR}/private/app/blobs/sha256:{secrets.token_hex(32)}" for _ in range(50)]
        results = gather_gets(urls)
        assert all(r.status == 404 for r in results), [r.status for r in results]
        # The renewal runs behind the pulls: count once the proxy has it.
        wait_until(lambda: admin.ok("GET", f"/registries/{cred['id']}")["token"]["mints"] > before,
                   timeout=5, what="the renewal")
        assert fake.mints - before == 1
    finally:
        fake.stop()


def test_failing_mint_keeps_the_last_token_until_it_expires(registry: Upstream, short_tokens: TokenServer,
                                                            make_proxy: ProxyFactory) -> None:
    fake = ecr_fixture(short_tokens, lifetime=3)
    try:
        proxy, admin = start(make_proxy, registry, ECR)
        # A margin of half the lifetime: renewal is due 1.5 s after minting, 1.5 s before expiry.
        cred = add_ecr(admin, fake, renew_margin=1.5)
        path = f"/v2/{ECR}/private/app/manifests/1"
        assert get(proxy.host, path).status == 200
        token = minted(proxy, admin)
        fake.fail = True
        wait_past(token["next_refresh"], "the renewal to be due")
        assert get(proxy.host, path).status == 200  # renewal due; it fails behind this pull
        def view() -> dict[str, Any]:
            return dict(admin.ok("GET", f"/registries/{cred['id']}")["token"])

        wait_until(lambda: view()["failures"] >= 1, timeout=5, what="the failed renewal")
        failed = view()
        assert failed["failures"] >= 1 and failed["last_result"].startswith("failed: ECR GetAuthorizationToken")
        assert SECRET_KEY not in failed["last_result"]
        assert time.time() < token["expires_at"], "too slow to see the last token still in use"
        assert get(proxy.host, path).status == 200  # still the last good token

        wait_past(token["expires_at"], "the last token to expire")
        short_tokens.set_login("AWS", None)  # expired: ECR refuses it now
        reply = get(proxy.host, path)
        assert reply.status == 401 and reply.error_codes == ["UNAUTHORIZED"]
        # The proxy knew the token had expired and said why, rather than sending it.
        assert ECR in reply.error_message and "GetAuthorizationToken" in reply.error_message
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
            "address": ECR, "endpoint": registry.url, "token_realms": registry.token_realms, "kind": "ecr",
            "access_key_id": fake.access_key_id,
            "secret_access_key_file": str(secret_file), "aws_endpoint_url": fake.url, "renew_margin": "10m"}]},
            env={"REGISTRY_PROXY_ADMIN_TOKEN": token, **AWS_ISOLATION})
        assert get(proxy.host, f"/v2/{ECR}/private/app/manifests/1").status == 200
        [entry] = Admin(proxy.host, token).registries()
        assert (entry["kind"], entry["source"], entry["renew_margin"]) == ("ecr", "config", 600)
        assert entry["token"]["last_result"] == "ok" and fake.mints == 1
        assert SECRET_KEY not in proxy.log_text()
    finally:
        fake.stop()
