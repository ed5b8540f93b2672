"""Calls to the admin API, as an operator's script would make them."""

from __future__ import annotations

import json
import secrets
from typing import Any

from .http import Reply, call


def new_token() -> str:
    return secrets.token_urlsafe(24)


class Admin:
    def __init__(self, host: str, token: str) -> None:
        self.host = host
        self.token = token
        self.replies: list[Reply] = []  # every answer, for the write-only checks

    def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
             content_type: str = "application/json", token: str | None = None) -> Reply:
        headers = {"Authorization": f"Bearer {self.token if token is None else token}"}
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        if data is not None:
            headers["Content-Type"] = content_type
        reply = call(self.host, method, f"/api/v1{path}", headers, body=data)
        self.replies.append(reply)
        return reply

    def add(self, address: str, username: str, password: str, email: str = "", *,
            environment: str | None = None) -> dict[str, Any]:
        body = {"address": address, "username": username, "password": password, "email": email}
        if environment is not None:
            body["environment"] = environment
        reply = self.call("POST", "/registries", body)
        assert reply.status == 201, reply.body
        return dict(reply.json())

    def environment(self, name: str, **fields: Any) -> dict[str, Any]:
        reply = self.call("POST", "/environments", {"name": name, **fields})
        assert reply.status == 201, reply.body
        return dict(reply.json())

    def key(self, environment: str) -> dict[str, Any]:
        """A new pull key of the environment: id and secret (shown this once)."""
        reply = self.call("POST", f"/environments/{environment}/keys")
        assert reply.status == 201, reply.body
        return dict(reply.json())

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        reply = self.call(method, path, body)
        assert 200 <= reply.status < 300, (method, path, reply.status, reply.body)
        return reply.json() if reply.body else None

    def registries(self) -> list[dict[str, Any]]:
        return list(self.ok("GET", "/registries")["registries"])

    def set(self, name: str, value: str) -> dict[str, Any]:
        return dict(self.ok("PUT", f"/settings/{name}", {"value": value}))
