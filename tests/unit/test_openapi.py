"""The OpenAPI document tells the truth about the admin routes."""

from __future__ import annotations

from pathlib import Path

from proxy.api.openapi import OPENAPI
from proxy.app import create_app
from proxy.config.settings import Settings


def _routes(tmp_path: Path) -> set[tuple[str, str]]:
    app = create_app(Settings(data_dir=tmp_path))
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path and path.startswith("/api/v1") and route.method != "HEAD":
            found.add((path, route.method.lower()))
    return found


def test_every_admin_route_is_documented_and_every_documented_one_exists(tmp_path: Path) -> None:
    documented = {(path, method) for path, item in OPENAPI["paths"].items()
                  for method in item if method != "parameters"}
    assert _routes(tmp_path) == documented


def test_documented_bodies_forbid_unknown_fields_and_never_return_passwords() -> None:
    schemas = OPENAPI["components"]["schemas"]
    assert "password" not in schemas["Registry"]["properties"]
    for name in ("NewRegistry", "RegistryEdit"):
        assert schemas[name]["additionalProperties"] is False
        assert schemas[name]["properties"]["password"]["writeOnly"] is True


def test_documented_credential_fields_are_the_accepted_ones() -> None:
    from proxy.credentials.fields import COMMON_FIELDS, KIND_FIELDS

    accepted = {f.name for f in COMMON_FIELDS} | {f.name for fields in KIND_FIELDS.values() for f in fields}
    schemas = OPENAPI["components"]["schemas"]
    assert set(schemas["NewRegistry"]["properties"]) == accepted
    assert set(schemas["RegistryEdit"]["properties"]) == accepted
    for secret in ("password", "secret_access_key", "json_key"):
        assert schemas["NewRegistry"]["properties"][secret]["writeOnly"] is True
        assert secret not in schemas["Registry"]["properties"]
