"""A client for the admin API (/api/v1), on the standard library only.

Every failure becomes an ``AdminError`` whose text is one line an operator
can act on. That text is built here, where the token and the password are
known, so it can be scrubbed of both before anyone prints it.
"""

from __future__ import annotations

import http.client
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeAlias

from proxy import __version__

__all__ = ["ADMIN_TOKEN_ENV", "DEFAULT_URL", "URL_ENV", "AdminClient", "AdminError", "UsageError", "check_url",
           "resolve_token"]

URL_ENV = "REGISTRY_PROXY_URL"
ADMIN_TOKEN_ENV = "REGISTRY_PROXY_ADMIN_TOKEN"
DEFAULT_URL = "http://127.0.0.1:5000"
TIMEOUT = 30.0
MAX_ANSWER = 16 * 1024 * 1024

# What an HTTP header value can carry as-is. Anything else would make
# http.client raise an error that quotes the whole header, token included.
_TOKEN = re.compile(r"[\x21-\x7e]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# What a request body holds: the upstreams API takes booleans and null to clear a
# field; a credential's renew_margin is a number of seconds; an environment's
# anonymous_from is a list of networks.
Body: TypeAlias = Mapping[str, str | bool | int | float | list[str] | None]

MISSING_TOKEN = (f"no admin token: pass --token-file PATH (the proxy writes one to <data_dir>/admin-token on first "
                 f"start), set ${ADMIN_TOKEN_ENV}, or pass --token")


class AdminError(Exception):
    """A failure to report as ``registry-proxy: <message> (field: <field>)``; exit status 1."""

    exit_status = 1

    def __init__(self, message: str, *, field: str | None = None, status: int | None = None,
                 code: str | None = None) -> None:
        self.message = _CONTROL.sub(" ", message)
        self.field = field
        self.status = status
        # The admin API's error code (NOT_FOUND, INVALID, ...), when the API answered with one.
        self.code = code
        super().__init__(self.line())

    def line(self) -> str:
        return self.message if not self.field else f"{self.message} (field: {self.field})"

    def as_json(self) -> dict[str, Any]:
        """The admin API's error shape, with the HTTP status (None: no answer came)."""
        return {"error": {"code": self.code, "message": self.message, "field": self.field, "status": self.status}}


class UsageError(AdminError):
    """The command line itself is incomplete; exit status 2, like argparse."""

    exit_status = 2


def check_url(url: str) -> str:
    """The base URL without a trailing slash, or a UsageError saying what is wrong with it."""
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        raise UsageError(f"the proxy URL {url!r} is not a URL like {DEFAULT_URL}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"the proxy URL {url!r} must look like {DEFAULT_URL} (http:// or https://, then host[:port])")
    if "@" in parts.netloc:
        # urllib would not send them anyway, and they would end up in messages.
        raise UsageError("the proxy URL must not contain a user name or password; the admin token goes in --token-file")
    if parts.query or parts.fragment:
        raise UsageError(f"the proxy URL must not have a query or fragment: {DEFAULT_URL} or https://host/prefix")
    return url.rstrip("/")


def resolve_token(token: str | None, token_file: str | None, environ: Mapping[str, str]) -> str:
    """--token, else --token-file, else $REGISTRY_PROXY_ADMIN_TOKEN; surrounding whitespace is dropped."""
    if token is not None:
        value, origin = token, "--token"
    elif token_file is not None:
        try:
            value, origin = Path(token_file).read_text(encoding="utf-8"), token_file
        except OSError as exc:
            raise UsageError(f"cannot read the token file {token_file}: {exc.strerror or type(exc).__name__}") from None
        except UnicodeDecodeError:
            raise UsageError(f"the token file {token_file} is not UTF-8 text") from None
    elif environ.get(ADMIN_TOKEN_ENV):
        value, origin = environ[ADMIN_TOKEN_ENV], f"${ADMIN_TOKEN_ENV}"
    else:
        raise UsageError(MISSING_TOKEN)
    value = value.strip()
    if not value:
        raise UsageError(f"the admin token from {origin} is empty")
    if not _TOKEN.fullmatch(value):
        raise UsageError(f"the admin token from {origin} contains spaces or characters that cannot be sent in "
                         "an HTTP header")
    return value


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # urllib would resend the Authorization header to wherever a redirect
    # points; the admin API never redirects, so a redirect is an error.
    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> None:
        return None


class AdminClient:
    def __init__(self, url: str, token: str, *, timeout: float = TIMEOUT) -> None:
        self.url = check_url(url)
        self._token = token
        self._timeout = timeout
        # No proxies from the environment: the bearer token must go straight
        # to the proxy it is for, not through a forward proxy in clear text.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())

    # Registries

    def list_registries(self, environment: str | None = None) -> dict[str, Any]:
        """All credentials, or those of one environment."""
        query = "" if environment is None else "?" + urllib.parse.urlencode({"environment": environment})
        return self._call("GET", f"/registries{query}")

    def add_registry(self, address: str, fields: Body, *, secrets: Iterable[str] = ()) -> dict[str, Any]:
        """POST a credential of any kind; fields set to None are left out, so the server's defaults apply.

        ``secrets`` (password, secret access key, JSON key) are scrubbed from errors.
        """
        body = {"address": address, **_given(fields)}
        return self._call("POST", "/registries", body, secrets=secrets)

    def show_registry(self, record_id: int) -> dict[str, Any]:
        return self._call("GET", f"/registries/{record_id}")

    def edit_registry(self, record_id: int, fields: Body, *, secrets: Iterable[str] = ()) -> dict[str, Any]:
        """PATCH the given fields; None leaves one as it is (the registries API has no null)."""
        return self._call("PATCH", f"/registries/{record_id}", _given(fields), secrets=secrets)

    def set_active(self, record_id: int, active: bool) -> dict[str, Any]:
        return self._call("POST", f"/registries/{record_id}/{'activate' if active else 'deactivate'}")

    def delete_registry(self, record_id: int) -> None:
        self._request("DELETE", f"/registries/{record_id}")

    # Settings

    def list_settings(self) -> dict[str, Any]:
        return self._call("GET", "/settings")

    def show_setting(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/settings/{urllib.parse.quote(name, safe='')}")

    def set_setting(self, name: str, value: str) -> dict[str, Any]:
        return self._call("PUT", f"/settings/{urllib.parse.quote(name, safe='')}", {"value": value})

    def unset_setting(self, name: str) -> dict[str, Any]:
        return self._call("DELETE", f"/settings/{urllib.parse.quote(name, safe='')}")

    # Upstreams: how each registry is reached

    def list_upstreams(self) -> dict[str, Any]:
        return self._call("GET", "/upstreams")

    def show_upstream(self, address: str) -> dict[str, Any]:
        return self._call("GET", _upstream_path(address))

    def change_upstream(self, address: str, changes: Body, *, secrets: Iterable[str] = ()) -> dict[str, Any]:
        """PATCH only the given fields; None clears one. ``secrets`` (the client key) are scrubbed from errors."""
        return self._call("PATCH", _upstream_path(address), changes, secrets=secrets)

    def delete_upstream(self, address: str) -> None:
        self._request("DELETE", _upstream_path(address))

    def presented_certificates(self, address: str) -> dict[str, Any]:
        """The chain the registry presents to the proxy, fetched by the proxy without verifying it."""
        return self._call("GET", f"{_upstream_path(address)}/certificates")

    # Environments and their pull keys

    def list_environments(self) -> dict[str, Any]:
        return self._call("GET", "/environments")

    def add_environment(self, name: str, fields: Body) -> dict[str, Any]:
        """POST an environment; fields set to None are left out, so the server's defaults apply."""
        return self._call("POST", "/environments", {"name": name, **_given(fields)})

    def show_environment(self, name: str) -> dict[str, Any]:
        return self._call("GET", _environment_path(name))

    def change_environment(self, name: str, changes: Body) -> dict[str, Any]:
        """PATCH only the given fields."""
        return self._call("PATCH", _environment_path(name), changes)

    def delete_environment(self, name: str, *, force: bool) -> None:
        """Without ``force`` the proxy refuses while the environment has credentials or keys."""
        self._request("DELETE", _environment_path(name) + ("?force=true" if force else ""))

    def list_keys(self, environment: str) -> dict[str, Any]:
        return self._call("GET", f"{_environment_path(environment)}/keys")

    def add_key(self, environment: str, key_id: str | None) -> dict[str, Any]:
        """A new pull key; the answer holds its secret, which no other answer ever does."""
        body = None if key_id is None else {"id": key_id}
        return self._call("POST", f"{_environment_path(environment)}/keys", body)

    def revoke_key(self, environment: str, key_id: str) -> None:
        self._request("DELETE", f"{_environment_path(environment)}/keys/{urllib.parse.quote(key_id, safe='')}")

    # The content cache

    def start_cache_verify(self) -> dict[str, Any]:
        """Start re-hashing the cache; the answer is the run's state, ``running`` at first."""
        return self._call("POST", "/cache/verify")

    def cache_verify(self) -> dict[str, Any]:
        """The run going on, or the last one."""
        return self._call("GET", "/cache/verify")

    # HTTP

    def _call(self, method: str, path: str, body: Body | None = None, *,
              secrets: Iterable[str] = ()) -> dict[str, Any]:
        answer = self._request(method, path, body, secrets=secrets)
        if answer is None:
            raise AdminError(f"the proxy at {self.url} sent an empty answer to {method} {path}")
        return answer

    def _request(self, method: str, path: str, body: Body | None = None, *,
                 secrets: Iterable[str] = ()) -> dict[str, Any] | None:
        hide = [self._token, *secrets]
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json",
                   "User-Agent": f"registry-proxy-cli/{__version__}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(f"{self.url}/api/v1{path}", data=data, headers=headers, method=method)
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                status, raw = response.status, response.read(MAX_ANSWER)
        except urllib.error.HTTPError as exc:
            with exc:
                raise self._failure(exc.code, exc.reason, _read(exc), hide) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ssl.SSLCertVerificationError):
                raise AdminError(f"the proxy at {self.url} presented a certificate this machine does not trust "
                                 f"({exc.reason.verify_message}); if a private CA signed it, point SSL_CERT_FILE "
                                 "at that CA's PEM file") from None
            raise AdminError(f"the proxy at {self.url} is not reachable: {_reason(exc.reason)}") from None
        except TimeoutError:
            raise AdminError(f"the proxy at {self.url} did not answer within {self._timeout:g}s") from None
        except http.client.HTTPException as exc:
            raise AdminError(f"the proxy at {self.url} broke off the answer ({type(exc).__name__})") from None
        except OSError as exc:
            raise AdminError(f"the proxy at {self.url} is not reachable: {_reason(exc)}") from None
        if status == 204:
            return None
        try:
            answer: Any = json.loads(raw)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise AdminError(f"the proxy at {self.url} answered {method} {path} with something other than the "
                             "admin API's JSON; does --url point at registry-proxy?")
        return answer

    def _failure(self, status: int, reason: str, raw: bytes, hide: list[str]) -> AdminError:
        try:
            answer: Any = json.loads(raw)
        except ValueError:
            answer = None
        if status == 401:
            return AdminError(f"the proxy at {self.url} refused the admin token; give the right one with "
                              f"--token-file, ${ADMIN_TOKEN_ENV} or --token (the proxy logs at start where "
                              "it reads its token from)", status=status)
        if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
            error = answer["error"]
            field = error.get("field")
            code = error.get("code")
            return AdminError(_scrub(str(error.get("message") or f"HTTP {status}"), hide),
                              field=_scrub(field, hide) if isinstance(field, str) else None, status=status,
                              code=_scrub(code, hide) if isinstance(code, str) else None)
        if isinstance(answer, dict) and isinstance(answer.get("errors"), list) and answer["errors"]:
            first = answer["errors"][0]
            message = first.get("message") if isinstance(first, dict) else None
            # The registry-shaped error body: the admin API's own handler did not answer.
            return AdminError(f"the proxy at {self.url} failed with HTTP {status}: "
                              f"{_scrub(str(message or reason), hide)} (see the proxy's log)", status=status)
        if status >= 500:
            return AdminError(f"the proxy at {self.url} failed with HTTP {status} {_scrub(reason, hide)} "
                              "(see the proxy's log)", status=status)
        return AdminError(f"the proxy at {self.url} answered HTTP {status} {_scrub(reason, hide)}; "
                          "does --url point at registry-proxy?", status=status)


def _given(fields: Body) -> dict[str, str | bool | int | float | list[str] | None]:
    return {key: value for key, value in fields.items() if value is not None}


def _upstream_path(address: str) -> str:
    # Quoted whole: the server then names what is wrong with a mistyped
    # address ("drop the scheme") instead of the router answering 404.
    return f"/upstreams/{urllib.parse.quote(address, safe='')}"


def _environment_path(name: str) -> str:
    return f"/environments/{urllib.parse.quote(name, safe='')}"


def _read(exc: urllib.error.HTTPError) -> bytes:
    try:
        return exc.read(MAX_ANSWER)
    except (OSError, http.client.HTTPException):
        return b""


def _reason(reason: object) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def _scrub(text: str, hide: list[str]) -> str:
    # The server never echoes a password or the token, but a message that
    # did must still not reach a terminal or a CI log.
    for secret in hide:
        if secret:
            text = text.replace(secret, "***")
    return text
