"""Declared input fields: what each key of an admin API body or of the config file takes, said once.

Validation, the admin API's OpenAPI document and the Helm chart's
values.schema.json all derive from these declarations, so they cannot drift
apart. A field is written two ways, and its ValueType reads both:

  JSON body (admin API)  strict JSON types; certificates and secrets inline
  config file (YAML)     lenient scalars (yes, 20GiB, 5m); files named by path

The vocabulary lives in proxy.credentials because that is the lowest package
that config, store and api all import, and credential fields are declared
with it. Readers live with their face: proxy.api.admin_input reads JSON
bodies, proxy.config.values reads the config file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeAlias

__all__ = ["Field", "FieldError", "Group", "Invalid", "ListOf", "Member", "ValueType", "body_schema", "field_schema",
           "file_schema"]

_UNSET: Any = object()

# Declarations compare by identity (eq=False): each field is one object, used wherever the field appears.


class Invalid(ValueError):
    """A value its type refuses; ``str()`` is the reason, worded for the face that read it.

    ``shown`` is the value a config error quotes when it is not the one
    written: one entry of a whitelist, a path joined to the working directory.
    """

    def __init__(self, reason: str, *, shown: Any = _UNSET) -> None:
        super().__init__(reason)
        self.shown = shown

    def quoted(self, written: Any) -> Any:
        return written if self.shown is _UNSET else self.shown


class FieldError(ValueError):
    """A field that does not fit; ``field`` names it, as the admin API's error body does."""

    def __init__(self, message: str, field: str) -> None:
        self.field = field
        super().__init__(message)


def _unchanged(value: Any, name: str) -> Any:
    return value


def _json_only(value: Any, base: Path) -> Any:
    # Groups of the config file never list a JSON-only field, so this is not reached.
    raise Invalid("Not a config file key.")


@dataclass(frozen=True, eq=False)
class ValueType:
    """How one kind of value is read from a JSON body and from the config file, and what JSON Schema says of each."""

    json_types: tuple[type, ...]
    json_schema: Mapping[str, Any]
    file_schema: Mapping[str, Any]
    # (value, working directory) -> value; raises Invalid with a reason that follows "Config 'k' has value 'v'.".
    from_file: Callable[[Any, Path], Any] = _json_only
    # (value of an accepted JSON type, field name) -> value; raises Invalid with the whole message.
    from_json: Callable[[Any, str], Any] = _unchanged
    # How a value is written, added to the description of every field of this type.
    json_hint: str = ""
    file_hint: str = ""


def _described(description: str, hint: str) -> str:
    return f"{description}; {hint}" if hint else description


@dataclass(frozen=True, eq=False)
class Field:
    name: str
    type: ValueType
    description: str
    required: bool = False
    # Accepted, stored and never shown back.
    secret: bool = False
    # In a JSON body, null clears the field (PATCH /upstreams).
    nullable: bool = False
    # What applies when the field is left out; documentation only.
    default: Any = None


@dataclass(frozen=True, eq=False)
class ListOf:
    name: str
    description: str
    item: Group


@dataclass(frozen=True, eq=False)
class Group:
    """A mapping of members: a JSON body, or one block of the config file."""

    name: str
    description: str
    members: tuple[Member, ...]
    # Keys may be written dotted (registry.default: x) or nested (registry: {default: x}).
    dotted: bool = False
    # In the config file, `key: null` means the key is not set.
    null_is_unset: bool = False
    # The advice a config error gives when a required field is missing.
    on_missing: str = ""
    # Pairs of keys that say the same thing two ways (password, password_file): at most one may be set.
    either: tuple[tuple[str, str], ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(member.name for member in self.members)

    @property
    def fields(self) -> tuple[Field, ...]:
        return tuple(member for member in self.members if isinstance(member, Field))

    def optional(self, description: str) -> Group:
        """The same fields, none required: the body of an edit."""
        return replace(self, description=description, members=tuple(
            replace(m, required=False) if isinstance(m, Field) else m for m in self.members))


Member: TypeAlias = Field | Group | ListOf


def field_schema(field: Field) -> dict[str, Any]:
    """JSON Schema of one field in a JSON body or answer."""
    schema = dict(field.type.json_schema)
    if field.nullable:
        schema["type"] = [schema["type"], "null"]
    if field.secret:
        schema["writeOnly"] = True
    if field.default is not None:
        schema["default"] = field.default
    schema["description"] = _described(field.description, field.type.json_hint)
    return schema


def body_schema(group: Group) -> dict[str, Any]:
    """JSON Schema of a JSON body of ``group``'s fields, as the admin API reads it."""
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False}
    if group.description:
        schema["description"] = group.description
    required = [f.name for f in group.fields if f.required]
    if required:
        schema["required"] = required
    schema["properties"] = {f.name: field_schema(f) for f in group.fields}
    return schema


def file_schema(member: Member) -> dict[str, Any]:
    """JSON Schema (draft-07) of a part of the config file, as the config reader accepts it."""
    if isinstance(member, Field):
        return {**member.type.file_schema, "description": _described(member.description, member.type.file_hint)}
    if isinstance(member, ListOf):
        return {"type": "array", "description": member.description, "items": file_schema(member.item)}
    properties: dict[str, Any] = {}
    for sub in member.members:
        properties[sub.name] = file_schema(sub)
        if member.dotted and "." in sub.name:
            outer, inner = sub.name.split(".", 1)
            nested = properties.setdefault(outer, {"type": "object", "description": f"The {outer}.* keys, written nested",
                                                   "properties": {}, "additionalProperties": False})
            nested["properties"][inner] = file_schema(sub)
    schema = {"type": "object", "description": member.description, "properties": properties,
              "additionalProperties": False}
    required = [f.name for f in member.fields if f.required]
    if required:
        schema["required"] = required
    if member.either:
        schema["allOf"] = [{"not": {"required": list(pair)}} for pair in member.either]
    return schema
