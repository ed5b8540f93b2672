"""Credential kinds (basic, ecr, gcr) on the command line: their flags, and how secrets are read.

Secrets come from stdin, a terminal prompt or (a Google service-account key)
a file, never from arguments, where ``ps`` and shell history would show them;
they are only ever sent to the proxy, and handed back to the caller so that
the client can scrub them from any error. A flag of another kind than the
credential's is refused before any secret is read or asked for, naming the
API field it would have set.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from dataclasses import dataclass

from proxy.cli.client import AdminError, UsageError
from proxy.cli.parsing import seconds
from proxy.credentials.fields import KIND_FIELDS
from proxy.credentials.providers.gcr import GCR_MODES

__all__ = ["MAX_KEY_FILE", "check_kind_flags", "kind_options", "minted_fields", "password"]

# A Google service-account key is a few KiB; the API takes at most 1 MiB per body.
MAX_KEY_FILE = 256 * 1024


def kind_options(parser: argparse.ArgumentParser, *, new: bool) -> None:
    # In groups per kind, so --help shows which flag goes with which kind.
    basic = parser.add_argument_group("basic credentials")
    basic.add_argument("--username", help="user name at the registry" + (" (required)" if new else ""))
    basic.add_argument("--password-stdin", action="store_true",
                       help="read the password from stdin (one trailing newline is dropped) instead of asking")

    ecr = parser.add_argument_group("ecr credentials",
                                    None if not new else "Without --access-key-id the proxy uses the default AWS "
                                    "credential chain: environment, shared config, instance role, IRSA.")
    ecr.add_argument("--access-key-id", metavar="ID", help="AWS access key id, e.g. AKIA...")
    ecr.add_argument("--secret-access-key-stdin", action="store_true",
                     help="read the secret access key from stdin (one trailing newline is dropped) instead of "
                     "asking; needs --access-key-id")
    ecr.add_argument("--role-arn", metavar="ARN", help="IAM role to assume, arn:aws:iam::<account>:role/<name>")
    ecr.add_argument("--aws-endpoint-url", metavar="URL", help="ECR API endpoint, e.g. a VPC endpoint")

    gcr = parser.add_argument_group("gcr credentials",
                                    None if not new else "Without a key the proxy uses Application Default "
                                    "Credentials (e.g. workload identity on GKE).")
    keys = gcr.add_mutually_exclusive_group()
    keys.add_argument("--json-key-file", metavar="PATH", help="the service-account JSON key, read from PATH")
    keys.add_argument("--json-key-stdin", action="store_true", help="read the service-account JSON key from stdin")
    gcr.add_argument("--mode", choices=GCR_MODES,
                     help="access_token" + (" (default)" if new else "") + ": mint OAuth tokens from the key; "
                     "json_key: send the key itself as the password of _json_key")

    minted = parser.add_argument_group("ecr and gcr credentials")
    minted.add_argument("--renew-margin", metavar="SECONDS", type=seconds,
                        help="renew a minted token this long before it expires (also 90s, 10m, 1h); default: "
                        "in the last quarter of its lifetime")


@dataclass(frozen=True)
class _KindFlag:
    dest: str
    flag: str
    field: str  # the API field it sets, named in errors as the server names its fields

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds whose declared fields include this flag's field."""
        return tuple(kind for kind, fields in KIND_FIELDS.items() if any(f.name == self.field for f in fields))


_KIND_FLAGS = (
    _KindFlag("username", "--username", "username"),
    _KindFlag("password_stdin", "--password-stdin", "password"),
    _KindFlag("access_key_id", "--access-key-id", "access_key_id"),
    _KindFlag("secret_access_key_stdin", "--secret-access-key-stdin", "secret_access_key"),
    _KindFlag("role_arn", "--role-arn", "role_arn"),
    _KindFlag("aws_endpoint_url", "--aws-endpoint-url", "aws_endpoint_url"),
    _KindFlag("json_key_file", "--json-key-file", "json_key"),
    _KindFlag("json_key_stdin", "--json-key-stdin", "json_key"),
    _KindFlag("mode", "--mode", "mode"),
    _KindFlag("renew_margin", "--renew-margin", "renew_margin"),
)


def check_kind_flags(args: argparse.Namespace, kind: str, whose: str) -> None:
    # Checked before any secret is read or asked for: a flag of the wrong kind
    # is a typo or a misunderstanding, and the server would refuse it anyway.
    for option in _KIND_FLAGS:
        value = getattr(args, option.dest)
        if value is not None and value is not False and kind not in option.kinds:
            raise UsageError(f"{option.flag} does not apply to {whose}; it is for --kind "
                             f"{' or '.join(option.kinds)}", field=option.field)


def minted_fields(args: argparse.Namespace, kind: str, fields: dict[str, str | int | float | None], *,
                  had_secret: bool, whose: str) -> tuple[str, ...]:
    """Put an ecr or gcr credential's fields into ``fields``; the secrets read, for scrubbing."""
    fields["renew_margin"] = args.renew_margin
    if kind == "ecr":
        fields.update(access_key_id=args.access_key_id, role_arn=args.role_arn,
                      aws_endpoint_url=args.aws_endpoint_url)
        if not (had_secret or args.access_key_id):
            if args.secret_access_key_stdin:
                raise UsageError("--secret-access-key-stdin needs --access-key-id: an access key is the pair of "
                                 "both; leave both out to use the default AWS credential chain",
                                 field="access_key_id")
            return ()
        secret = _read_secret(args.secret_access_key_stdin, "secret access key", "secret_access_key",
                              "--secret-access-key-stdin", f"Secret access key {whose}: ")
        fields["secret_access_key"] = secret
        return (secret,)
    fields["mode"] = args.mode
    if args.json_key_file is not None:
        key = _read_key_file(args.json_key_file)
    elif args.json_key_stdin:
        key = _read_stdin("service-account key", "json_key", strip_newline=False)
    elif had_secret:
        # The stored key is never shown, so the edit cannot keep it unseen.
        raise UsageError(f"the service-account key is write-only: send it again {whose} with --json-key-file "
                         "PATH or --json-key-stdin", field="json_key")
    else:
        return ()
    fields["json_key"] = key
    return (key, *_private_key(key))


def password(args: argparse.Namespace, prompt: str) -> str:
    """A basic credential's password: stdin with --password-stdin, else asked for twice on the terminal."""
    return _read_secret(args.password_stdin, "password", "password", "--password-stdin", prompt)


def _read_key_file(path: str) -> str:
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise UsageError(f"cannot read --json-key-file {path}: {exc.strerror or type(exc).__name__}",
                         field="json_key") from None
    if len(raw) > MAX_KEY_FILE:
        raise UsageError(f"--json-key-file {path} is larger than {MAX_KEY_FILE // 1024} KiB; is it a "
                         "service-account key?", field="json_key")
    try:
        # utf-8-sig: an editor on Windows may have saved the key with a BOM,
        # which the JSON parser on the server would refuse.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"--json-key-file {path} is not UTF-8 text; is it a service-account key?",
                         field="json_key") from None


def _private_key(key: str) -> tuple[str, ...]:
    # The whole key is scrubbed from messages already; the private key alone
    # as well, should a message ever quote a part of the key.
    try:
        value = json.loads(key).get("private_key")
    except (ValueError, AttributeError):
        return ()
    return (value,) if isinstance(value, str) and value else ()


def _read_secret(from_stdin: bool, what: str, field: str, flag: str, prompt: str) -> str:
    if from_stdin:
        return _read_stdin(what, field, strip_newline=True)
    if not sys.stdin.isatty():
        raise UsageError(f"cannot ask for the {what}: stdin is not a terminal; pipe it in with {flag}",
                         field=field)
    try:
        secret = getpass.getpass(prompt)
        if not secret:
            raise AdminError(f"the {what} must not be empty", field=field)
        if getpass.getpass(f"Repeat the {what}: ") != secret:
            raise AdminError(f"the two {what}s differ; nothing was changed", field=field)
    except EOFError:
        raise AdminError(f"no {what} given; nothing was changed", field=field) from None
    return secret


def _read_stdin(what: str, field: str, *, strip_newline: bool) -> str:
    raw = sys.stdin.buffer.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise AdminError(f"the {what} on stdin is not UTF-8 text", field=field) from None
    if strip_newline:
        # As docker login --password-stdin does: `echo secret |` works, and a
        # secret may still end in other whitespace. A JSON key is sent as read:
        # whitespace around it means nothing to JSON.
        text = text.removesuffix("\n").removesuffix("\r")
    if not text if strip_newline else not text.strip():
        raise AdminError(f"the {what} read from stdin is empty", field=field)
    return text
