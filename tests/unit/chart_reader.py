"""The chart's templates read for given values, without a helm binary.

``decide_blocks`` decides a template's if/with/range blocks for the values,
fills in bare paths and `toYaml <path> | nindent N`, follows the pod template
both workloads include (``EXPANDED``), and raises ``RenderFailed`` where the
chart would `fail`; ``manifest`` parses what is left, every other action read
as "<action>". A condition may use paths (.Values.x, .x, $.x, $variable.x),
string and number literals, parentheses and or/and/not/eq/ne/has/list/ternary/
dig; anything else fails the test rather than being guessed at.
``render_config`` is the chart's config helper done in Python.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import yaml
from proxy.config import settings as settings_module
from proxy.config.settings import load_settings

__all__ = ["CHART", "EXPANDED", "POD", "TEMPLATES", "RenderFailed", "Unsupported", "block_keyword", "decide_blocks",
           "evaluate", "helper_text", "load_config", "load_schema", "load_values", "manifest", "render_config"]

CHART = Path(__file__).resolve().parents[2] / "charts" / "registry-proxy"
TEMPLATES = CHART / "templates"
# The pod template the StatefulSet (mode single) and the Deployment (mode ha) share.
POD = TEMPLATES / "_pod.tpl"
# Helpers whose text decide_blocks expands in place of their include.
EXPANDED = {"registry-proxy.podTemplate": POD}


def load_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


def load_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return schema


def helper_text() -> str:
    return (TEMPLATES / "_helpers.tpl").read_text()


def block_keyword(action: str) -> str | None:
    """if, with, range, define, block, end or else, when the action opens or closes a block."""
    body = action.strip()
    body = body[1:].lstrip() if body.startswith("-") else body
    if body.startswith("/*"):
        return None
    match = re.match(r"(if|with|range|define|block|end|else)\b", body)
    return match[1] if match else None


def load_config(config: dict[str, Any], tmp_path: Path) -> settings_module.Settings:
    """The proxy's settings from a rendered config, read by the proxy's own parser."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_settings(path, environ={})


def render_config(values: dict[str, Any]) -> dict[str, Any]:
    """What "registry-proxy.config" in _helpers.tpl renders, done in Python.

    The defaults are read out of the helper itself, so this follows the
    template rather than a copy of it: keys .Values.config sets win; listen
    and data_dir are filled in when absent; tls.existingSecret adds the
    mounted files under config.tls; admin.listen is filled in from admin.port.
    """
    helper = helper_text()
    listen = re.search(r'set \$config "listen" \(printf "([^"]+)" \(int \.Values\.containerPort\)\)', helper)
    admin_listen = re.search(r'set \$admin "listen" \(printf "([^"]+)" \(int \.Values\.admin\.port\)\)', helper)
    data_dir = re.search(r'set \$config "data_dir" "([^"]+)"', helper)
    tls = re.search(r'dict "cert_file" "([^"]+)" "key_file" "([^"]+)"', helper)
    assert listen and admin_listen and data_dir and tls, "the config helper no longer has the shape this test reads"
    config: dict[str, Any] = copy.deepcopy(values["config"])
    config.setdefault("listen", listen[1].replace("%d", str(int(values["containerPort"]))))
    config["admin"] = dict(config.get("admin") or {})
    config["admin"].setdefault("listen", admin_listen[1].replace("%d", str(int(values["admin"]["port"]))))
    assert re.search(r'set \$config "external_url" \(printf "%s://%s" \$scheme \(first \.Values\.ingress\.hosts\)\.host\)',
                     helper) and 'ternary "https" "http" (gt (len .Values.ingress.tls) 0)' in helper, \
        "the config helper no longer derives external_url the way this test reads"
    ingress = values["ingress"]
    if ingress["enabled"] and ingress["hosts"]:
        config.setdefault("external_url", f"{'https' if ingress['tls'] else 'http'}://{ingress['hosts'][0]['host']}")
    config.setdefault("data_dir", data_dir[1])
    if values["tls"]["existingSecret"]:
        config["tls"] = {"cert_file": tls[1], "key_file": tls[2], **(config.get("tls") or {})}
    return config


_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)
_TOKEN = re.compile(r'\(|\)|"(?:[^"\\]|\\.)*"|[^\s()]+')
_FUNCTIONS = ("or", "and", "not", "eq", "ne", "has", "list", "ternary", "dig")
_PATH = re.compile(r"\$|\.|\$?(\.[A-Za-z_][A-Za-z0-9_]*)+|\$[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_VARIABLES = "$variables"


class Unsupported(AssertionError):
    """An expression this reader does not evaluate; in a condition, the test fails rather than guess."""


class RenderFailed(Exception):
    """The chart calls `fail` for these values; the message is what helm would print."""


_UNKNOWN = object()  # a variable set from an expression this reader does not evaluate


def decide_blocks(path: Path, values: dict[str, Any]) -> str:
    """The template with its if/with/range blocks decided for these values.

    A bare path ({{ .Values.x }}) and `toYaml <path> | nindent N` are filled
    in; every other action stays as written, so a test reads what the chosen
    branches hold. A condition may use paths (.Values.x, .x, $.x), string and
    number literals, parentheses and or/and/not/eq/has/list; anything else
    fails the test rather than being guessed at.
    """
    root = {"Values": values, "Release": {"Name": "registry-proxy", "Namespace": "default", "Service": "Helm"},
            _VARIABLES: {}}
    return _decide(_ACTION.split(path.read_text()), 0, root, root, emit=True)[0]


def _expand(name: str, dot: Any, root: dict[str, Any]) -> str:
    """The text of the helper `name` for this dot, as `include` returns it (variables are the helper's own)."""
    parts = _ACTION.split(EXPANDED[name].read_text())
    start = next(i for i in range(1, len(parts), 2) if re.fullmatch(rf'define "{re.escape(name)}"', parts[i]))
    return _decide(parts, start + 1, dot, {**root, _VARIABLES: {}}, emit=True)[0]


def _decide(parts: list[str], i: int, dot: Any, root: dict[str, Any], *, emit: bool) -> tuple[str, int]:
    """The text from parts[i] (even: text, odd: an action) to the 'end' or 'else' closing this level."""
    out: list[str] = []
    while i < len(parts):
        if i % 2 == 0:
            out.append(parts[i])
            i += 1
            continue
        action, keyword = parts[i], block_keyword(parts[i])
        if keyword in ("end", "else"):
            break
        i += 1
        if keyword not in ("if", "with", "range"):
            out.append(_act(action, dot, root) if emit else "")
            continue
        # Blocks inside a branch not taken are skipped without evaluating them.
        value: Any = evaluate(action.split(None, 1)[1], dot, root) if emit else None
        taken = emit and bool(value)
        if keyword == "range" and taken:
            items = list(value.values()) if isinstance(value, dict) else list(value)
            out += [_decide(parts, i, item, root, emit=True)[0] for item in items]
            i = _decide(parts, i, dot, root, emit=False)[1]
        else:
            body, i = _decide(parts, i, value if keyword == "with" else dot, root, emit=taken)
            out.append(body)
        while block_keyword(parts[i]) == "else":
            condition = parts[i].split(None, 1)[1:]
            i += 1
            assert not condition or condition[0].startswith("if "), f"unsupported: else {condition[0]}"
            chosen = emit and not taken and (not condition or bool(evaluate(condition[0][3:], dot, root)))
            body, i = _decide(parts, i, dot, root, emit=chosen)
            out.append(body)
            taken = taken or chosen
        assert block_keyword(parts[i]) == "end"
        i += 1
    return "".join(out) if emit else "", i


def _act(action: str, dot: Any, root: dict[str, Any]) -> str:
    """What an action that opens no block writes: a comment nothing, a variable assignment nothing."""
    if action.startswith("/*"):
        return ""
    failed = re.fullmatch(r'fail ("(?:[^"\\]|\\.)*")', action)
    if failed:
        raise RenderFailed(json.loads(failed[1]))
    assignment = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*) :?= (.+)", action, re.S)
    if assignment:
        try:
            root[_VARIABLES][assignment[1]] = evaluate(assignment[2], dot, root)
        except Unsupported:
            root[_VARIABLES][assignment[1]] = _UNKNOWN
        return ""
    included = re.fullmatch(r'include "([^"]+)" \.(?: \| nindent ([0-9]+))?', action)
    if included and included[1] in EXPANDED:
        text = _expand(included[1], dot, root)
        return text if not included[2] else "\n" + "\n".join(" " * int(included[2]) + line
                                                              for line in text.splitlines())
    to_yaml = re.fullmatch(r"toYaml (\S+) \| nindent ([0-9]+)", action)
    if to_yaml and _PATH.fullmatch(to_yaml[1]):
        text = yaml.safe_dump(evaluate(to_yaml[1], dot, root), sort_keys=False).rstrip("\n")
        return "\n" + "\n".join(" " * int(to_yaml[2]) + line for line in text.splitlines())
    try:
        value = evaluate(action, dot, root)
    except Unsupported:
        return f"{{{{ {action} }}}}"
    return str(value).lower() if isinstance(value, bool) else str(value)


def manifest(name: str, values: dict[str, Any]) -> dict[str, Any] | None:
    """The resource templates/<name> renders for these values, or None.

    Actions left in a line read "<action>"; a line that is one action (an
    include of labels, say) is dropped.
    """
    text = re.sub(r"(?m)^\s*\{\{[^\n]*\}\}\s*$", "", decide_blocks(TEMPLATES / name, values))
    loaded = yaml.safe_load(re.sub(r"\{\{.*?\}\}", "<action>", text))
    assert loaded is None or isinstance(loaded, dict)
    return loaded


def evaluate(expression: str, dot: Any, root: dict[str, Any]) -> Any:
    value, rest = _command(_TOKEN.findall(expression), dot, root)
    if rest:
        raise Unsupported(f"cannot evaluate {expression!r}")
    return value


def _command(tokens: list[str], dot: Any, root: dict[str, Any]) -> tuple[Any, list[str]]:
    """A function and its arguments, or one operand; up to a ')' or the end."""
    if not tokens or tokens[0] not in _FUNCTIONS:
        return _operand(tokens, dot, root)
    name, tokens = tokens[0], tokens[1:]
    args: list[Any] = []
    while tokens and tokens[0] != ")":
        if name in ("or", "and") and args and bool(args[-1]) == (name == "or"):
            tokens = _skip(tokens)  # decided: like Go's templates, the rest is not evaluated
            continue
        arg, tokens = _operand(tokens, dot, root)
        args.append(arg)
    if name in ("or", "and"):
        return args[-1], tokens
    if name == "not":
        return not args[0], tokens
    if name == "eq":
        return args[0] == args[1], tokens
    if name == "ne":
        return args[0] != args[1], tokens
    if name == "has":
        return args[0] in args[1], tokens
    if name == "ternary":
        return (args[0] if args[2] else args[1]), tokens
    if name == "dig":
        node = args[-1]
        for key in args[:-2]:
            if not isinstance(node, dict) or key not in node:
                return args[-2], tokens
            node = node[key]
        return node, tokens
    return args, tokens  # list


def _skip(tokens: list[str]) -> list[str]:
    """The tokens after one operand, which is not evaluated."""
    depth = 0
    for i, token in enumerate(tokens):
        depth += {"(": 1, ")": -1}.get(token, 0)
        if depth == 0:
            return tokens[i + 1:]
    raise AssertionError("unbalanced parentheses")


def _operand(tokens: list[str], dot: Any, root: dict[str, Any]) -> tuple[Any, list[str]]:
    token, tokens = tokens[0], tokens[1:]
    if token == "(":
        value, tokens = _command(tokens, dot, root)
        assert tokens[:1] == [")"], "unbalanced parentheses"
        return value, tokens[1:]
    if token.startswith('"'):
        return json.loads(token), tokens
    if re.fullmatch(r"-?[0-9]+", token):
        return int(token), tokens
    if not _PATH.fullmatch(token):
        raise Unsupported(f"unsupported: {token!r}")
    node = root if token.startswith("$") else dot
    fields = token.lstrip("$").split(".")
    if fields[0]:
        node = root[_VARIABLES].get(fields[0], _UNKNOWN)
        if node is _UNKNOWN:
            raise Unsupported(f"${fields[0]} is set from an expression this reader does not evaluate")
    for field in fields[1:] if token not in (".", "$") else []:
        node = node.get(field) if isinstance(node, dict) else None
    return node, tokens


def _load(config: dict[str, Any], tmp_path: Path) -> settings_module.Settings:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_settings(path, environ={})
