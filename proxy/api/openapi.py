"""The admin API's OpenAPI 3.1 document, served at /api/v1/openapi.json.

Request bodies, and the credential fields of answers, are rendered from the
same field declarations the handlers read bodies with, so the document
cannot promise a field the API refuses. Paths and answers are written here;
a test compares these paths and methods with the routes the app registers.
"""

from __future__ import annotations

from typing import Any

from proxy.config.connection import UPSTREAM_CHANGE
from proxy.config.environments import ENVIRONMENT_BODY, ENVIRONMENT_EDIT, KEY_BODY
from proxy.config.runtime import SETTINGS
from proxy.credentials.fields import CREDENTIAL, CREDENTIAL_EDIT, VISIBLE_FIELDS
from proxy.credentials.schema import body_schema, field_schema

__all__ = ["OPENAPI"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {status: _json(_ref("Error"), text) for status, text in (
    ("400", "invalid input; `field` names the culprit"), ("401", "missing or wrong admin token"),
    ("404", "no such credential, setting or upstream"), ("409", "managed by the config file"),
    ("413", "body is larger than 1 MiB"), ("415", "body is not application/json"))}
_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}]
_NAME = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string", "enum": list(SETTINGS.names)}}]
_STRING = {"type": "string"}
_NULLABLE = {"type": ["string", "null"]}
_SETTING_CHANGE = {"type": "object", "additionalProperties": False, "required": ["value"], "properties": {
    "value": {"anyOf": [field_schema(setting) for setting in SETTINGS.fields]}}}
_ENV = [{"name": "name", "in": "path", "required": True, "schema": _STRING, "description": "environment name"}]
_KEY_ID = [{"name": "id", "in": "path", "required": True, "schema": _STRING, "description": "pull key id"}]
_ADDRESS = [{"name": "address", "in": "path", "required": True, "schema": {"type": "string"},
             "description": "registry address, host[:port]"}]

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "registry-proxy admin API", "version": "1"},
    "security": [{"adminToken": []}],
    "paths": {
        "/api/v1/openapi.json": {"get": {"summary": "This document", "security": [],
                                         "responses": {"200": {"description": "OpenAPI document"}}}},
        "/api/v1/registries": {
            "get": {"summary": "List registry credentials",
                    "responses": {"200": _json({"type": "object", "properties": {
                        "registries": {"type": "array", "items": _ref("Registry")}}}, "all credentials"),
                        "401": _ERRORS["401"]}},
            "post": {"summary": "Add a credential; the newest active one per address is used",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("NewRegistry")}}},
                     "responses": {"201": _json(_ref("Registry"), "created"), "400": _ERRORS["400"],
                                   "401": _ERRORS["401"], "413": _ERRORS["413"], "415": _ERRORS["415"]}},
        },
        "/api/v1/registries/{id}": {
            "parameters": _ID,
            "get": {"summary": "Show a credential", "responses": {"200": _json(_ref("Registry"), "the credential"),
                                                                  "401": _ERRORS["401"], "404": _ERRORS["404"]}},
            "patch": {"summary": "Edit email, username and password (the password is always required)",
                      "requestBody": {"required": True,
                                      "content": {"application/json": {"schema": _ref("RegistryEdit")}}},
                      "responses": {"200": _json(_ref("Registry"), "updated"), **_ERRORS}},
            "delete": {"summary": "Delete a credential and its secret",
                       "responses": {"204": {"description": "deleted"}, "401": _ERRORS["401"],
                                     "404": _ERRORS["404"], "409": _ERRORS["409"]}},
        },
        "/api/v1/registries/{id}/activate": {
            "parameters": _ID,
            "post": {"summary": "Use this credential again", "responses": {
                "200": _json(_ref("Registry"), "activated"), "401": _ERRORS["401"], "404": _ERRORS["404"],
                "409": _ERRORS["409"]}},
        },
        "/api/v1/registries/{id}/deactivate": {
            "parameters": _ID,
            "post": {"summary": "Stop using this credential at once", "responses": {
                "200": _json(_ref("Registry"), "deactivated"), "401": _ERRORS["401"], "404": _ERRORS["404"],
                "409": _ERRORS["409"]}},
        },
        "/api/v1/environments": {
            "get": {"summary": "List environments", "responses": {"200": _json({"type": "object", "properties": {
                "environments": {"type": "array", "items": _ref("Environment")}}}, "all environments"),
                "401": _ERRORS["401"]}},
            "post": {"summary": "Create an environment",
                     "requestBody": {"required": True,
                                     "content": {"application/json": {"schema": _ref("NewEnvironment")}}},
                     "responses": {"201": _json(_ref("Environment"), "created"), "400": _ERRORS["400"],
                                   "401": _ERRORS["401"], "409": _json(_ref("Error"), "the name is taken"),
                                   "413": _ERRORS["413"], "415": _ERRORS["415"]}},
        },
        "/api/v1/environments/{name}": {
            "parameters": _ENV,
            "get": {"summary": "Show an environment", "responses": {
                "200": _json(_ref("Environment"), "the environment"), "401": _ERRORS["401"], "404": _ERRORS["404"]}},
            "patch": {"summary": "Change what an environment admits anonymously",
                      "requestBody": {"required": True,
                                      "content": {"application/json": {"schema": _ref("EnvironmentChange")}}},
                      "responses": {"200": _json(_ref("Environment"), "changed"), **_ERRORS}},
            "delete": {"summary": "Delete an environment; refused while it has credentials or keys, unless forced",
                       "parameters": [{"name": "force", "in": "query", "schema": {"type": "boolean"},
                                       "description": "delete its credentials and keys with it"}],
                       "responses": {"204": {"description": "deleted"}, "400": _ERRORS["400"],
                                     "401": _ERRORS["401"], "404": _ERRORS["404"],
                                     "409": _json(_ref("Error"), "has credentials or keys, is `default`, or is "
                                                                 "managed by the config file")}},
        },
        "/api/v1/environments/{name}/keys": {
            "parameters": _ENV,
            "get": {"summary": "List an environment's pull keys (never their secrets)", "responses": {
                "200": _json({"type": "object", "properties": {"keys": {"type": "array", "items": _ref("PullKey")}}},
                             "the keys"), "401": _ERRORS["401"], "404": _ERRORS["404"]}},
            "post": {"summary": "Create a pull key; its secret is in this answer and never again",
                     "requestBody": {"required": False,
                                     "content": {"application/json": {"schema": _ref("NewPullKey")}}},
                     "responses": {"201": _json({"allOf": [_ref("PullKey"), {"type": "object", "properties": {
                         "secret": {**_STRING, "description": "shown once"}}}]}, "created"), **_ERRORS}},
        },
        "/api/v1/environments/{name}/keys/{id}": {
            "parameters": _ENV + _KEY_ID,
            "delete": {"summary": "Revoke a pull key; its tokens stop working at once", "responses": {
                "204": {"description": "revoked"}, "401": _ERRORS["401"], "404": _ERRORS["404"],
                "409": _ERRORS["409"]}},
        },
        "/api/v1/settings": {
            "get": {"summary": "List settings", "responses": {"200": _json({"type": "object", "properties": {
                "settings": {"type": "array", "items": _ref("Setting")}}}, "all settings"), "401": _ERRORS["401"]}},
        },
        "/api/v1/settings/{name}": {
            "parameters": _NAME,
            "get": {"summary": "Show a setting", "responses": {"200": _json(_ref("Setting"), "the setting"),
                                                               "401": _ERRORS["401"], "404": _ERRORS["404"]}},
            "put": {"summary": "Change a setting; applies to the next pull",
                    "requestBody": {"required": True,
                                    "content": {"application/json": {"schema": _SETTING_CHANGE}}},
                    "responses": {"200": _json(_ref("Setting"), "changed"), "400": _ERRORS["400"],
                                  "401": _ERRORS["401"], "404": _ERRORS["404"], "413": _ERRORS["413"], "415": _ERRORS["415"]}},
            "delete": {"summary": "Unset a setting the API changed: back to the config file's value, or the default",
                       "responses": {"200": _json(_ref("Setting"), "the value that applies now"),
                                     "401": _ERRORS["401"], "404": _ERRORS["404"]}},
        },
        "/api/v1/upstreams": {
            "get": {"summary": "List how registries are reached (API and config file)", "responses": {
                "200": _json({"type": "object", "properties": {"upstreams": {"type": "array",
                                                                             "items": _ref("Upstream")}}},
                             "all upstream settings"), "401": _ERRORS["401"]}},
        },
        "/api/v1/upstreams/{address}": {
            "parameters": _ADDRESS,
            "get": {"summary": "Show how a registry is reached", "responses": {
                "200": _json(_ref("Upstream"), "the upstream"), "400": _ERRORS["400"], "401": _ERRORS["401"]}},
            "patch": {"summary": "Set endpoint, insecure, ca_cert, the client certificate, token_realms or alias; "
                                 "null clears a field",
                      "requestBody": {"required": True,
                                      "content": {"application/json": {"schema": _ref("UpstreamChange")}}},
                      "responses": {"200": _json(_ref("Upstream"), "changed"), **_ERRORS,
                                    "409": _json(_ref("Error"), "managed by the config file, or the alias names "
                                                                "another registry")}},
            "delete": {"summary": "Forget what the API set for this registry", "responses": {
                "204": {"description": "deleted"}, "400": _ERRORS["400"], "401": _ERRORS["401"], "404": _ERRORS["404"],
                "409": _ERRORS["409"]}},
        },
        "/api/v1/upstreams/{address}/certificates": {
            "parameters": _ADDRESS,
            "get": {"summary": "Connect and return the chain the registry presents, unverified", "responses": {
                "200": _json({"type": "object", "properties": {
                    "address": _STRING, "endpoint": _STRING,
                    "certificates": {"type": "array", "items": _ref("Certificate")}}}, "presented chain"),
                "400": _ERRORS["400"], "401": _ERRORS["401"], "502": _json(_ref("Error"), "cannot connect")}},
        },
        "/api/v1/cache/verify": {
            "post": {"summary": "Start re-hashing every cached blob and manifest; what does not match its digest "
                                "is moved to <data_dir>/cache/quarantine and fetched again on the next request",
                     "responses": {"202": _json(_ref("CacheVerify"), "started; GET this path for its progress"),
                                   "401": _ERRORS["401"],
                                   "409": _json(_ref("Error"), "a run is already going on")}},
            "get": {"summary": "The progress of the verify run going on, or the result of the last one",
                    "responses": {"200": _json(_ref("CacheVerify"), "state `never` until the first run"),
                                  "401": _ERRORS["401"]}},
        },
    },
    "components": {
        "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Registry": {"type": "object", "properties": {
                "id": {"type": "integer"}, **{f.name: field_schema(f) for f in VISIBLE_FIELDS},
                "state": {"enum": ["active", "inactive"]}, "in_use": {"type": "boolean"},
                "source": {"enum": ["api", "config"]},
                "created": {"type": "string", "format": "date-time"},
                "updated": {"type": "string", "format": "date-time"},
                "client_email": {**_STRING, "description": "the service account of a gcr key"},
                "token": {"type": "object", "description": "minted credentials only; never the token itself",
                          "properties": {"minted_at": _NULLABLE, "expires_at": _NULLABLE, "next_refresh": _NULLABLE,
                                         "last_result": _STRING, "failures": {"type": "integer"},
                                         "mints": {"type": "integer"}}}}},
            "NewRegistry": body_schema(CREDENTIAL),
            "RegistryEdit": body_schema(CREDENTIAL_EDIT),
            "Environment": {"type": "object", "properties": {
                "name": _STRING, "anonymous_pull": {"type": "boolean"},
                "anonymous_from": {"type": "array", "items": _STRING}, "source": {"enum": ["api", "config"]},
                "created": {"type": "string", "format": "date-time"},
                "updated": {"type": "string", "format": "date-time"},
                "registries": {"type": "integer", "description": "credentials it owns"},
                "keys": {"type": "integer", "description": "pull keys it has"}}},
            "NewEnvironment": body_schema(ENVIRONMENT_BODY),
            "EnvironmentChange": body_schema(ENVIRONMENT_EDIT),
            "PullKey": {"type": "object", "properties": {
                "id": _STRING, "environment": _STRING, "source": {"enum": ["api", "config"]},
                "created": {"type": "string", "format": "date-time"},
                "last_used": {"type": ["string", "null"], "format": "date-time"}}},
            "NewPullKey": body_schema(KEY_BODY),
            "Setting": {"type": "object", "properties": {
                "name": _STRING, "value": _STRING, "source": {"enum": ["default", "config", "api"]},
                "updated": {"type": ["string", "null"], "format": "date-time"},
                "warnings": {"type": "array", "items": _STRING}}},
            "Upstream": {"type": "object", "properties": {
                "address": _STRING, "endpoint": _STRING, "insecure": {"type": "boolean"}, "ca_cert": _NULLABLE,
                "ca_certificates": {"type": "array", "items": {"type": "object", "properties": {
                    "subject": _STRING, "not_after": _STRING, "sha256": _STRING}}}, "client_cert": _NULLABLE,
                "client_key_set": {"type": "boolean"}, "token_realms": {"type": "array", "items": _STRING},
                "alias": {**_NULLABLE, "description": "the name clients may use instead of the address"},
                "source": {"enum": ["default", "config", "api"]}}},
            "UpstreamChange": body_schema(UPSTREAM_CHANGE),
            "Certificate": {"type": "object", "properties": {
                "subject": _STRING, "issuer": _STRING, "not_before": _STRING, "not_after": _STRING,
                "sha256": _STRING, "is_ca": {"type": "boolean"}, "pem": _STRING}},
            "CacheVerify": {"type": "object", "required": ["state"], "properties": {
                "state": {"enum": ["never", "running", "done", "failed"]}, "error": _NULLABLE,
                "started": {"type": "string", "format": "date-time"},
                "finished": {"type": ["string", "null"], "format": "date-time"},
                "duration_seconds": {"type": "number"},
                "objects": {"type": "integer", "description": "held when the run began"},
                "checked": {"type": "integer", "description": "re-hashed, or found of the wrong size"},
                "bytes": {"type": "integer", "description": "bytes re-hashed"},
                "mismatched": {"type": "integer", "description": "did not match their digest; never served again"},
                "quarantined": {"type": "integer", "description": "of those, moved to <data_dir>/cache/quarantine"},
                "missing": {"type": "integer", "description": "gone or unreadable; fetched again when asked for"},
                "skipped": {"type": "integer", "description": "evicted or replaced while the run went on"}}},
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message", "field"], "properties": {
                    "code": _STRING, "message": _STRING, "field": {"type": ["string", "null"]}}}}},
        },
    },
}
