"""The Helm chart in charts/registry-proxy, checked without a helm binary.

Templates are Go templates, so they are checked as text: delimiters and
blocks balance, every include names a helper that exists, every .Values path
exists, one resource per file. The plain YAML (Chart.yaml, values.yaml) is
parsed, validated against values.schema.json, and the proxy config the chart
renders by default is loaded with the proxy's own settings parser, so the
chart cannot ship a config the proxy refuses. Which ports a Service, Ingress
or NetworkPolicy opens is read from the template with its if/with/range
blocks decided for given values (``decide_blocks``), which also follows the
pod template both workloads include and stops where the chart would `fail`.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import secrets
import string
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import trustme
import yaml
from aiohttp import web
from proxy.api.health import setup_health_routes
from proxy.api.metrics import setup_metrics_routes
from proxy.cli.client import URL_ENV
from proxy.config import settings as settings_module
from proxy.config.schema import config_json_schema
from proxy.config.settings import DATA_DIR_ENV, LISTEN_ENV, STATE_URL_ENV, load_settings
from proxy.store.admin_token import ADMIN_TOKEN_ENV, MIN_LENGTH, resolve_admin_token
from proxy.store.crypto import KEY_ENV, load_key

CHART = Path(__file__).resolve().parents[2] / "charts" / "registry-proxy"
TEMPLATES = CHART / "templates"
MANIFESTS = sorted(p for p in TEMPLATES.glob("*.yaml"))
ALL_TEMPLATES = sorted(p for p in TEMPLATES.iterdir() if p.suffix in (".yaml", ".tpl", ".txt"))
# The pod template the StatefulSet (mode single) and the Deployment (mode ha) share.
POD = TEMPLATES / "_pod.tpl"
# Helpers whose text decide_blocks expands in place of their include.
EXPANDED = {"registry-proxy.podTemplate": POD}

# Optional resources and the values key that switches each one on.
OPTIONAL = {
    "ingress.yaml": "ingress",
    "servicemonitor.yaml": "serviceMonitor",
    "pdb.yaml": "podDisruptionBudget",
    "networkpolicy.yaml": "networkPolicy",
    "hpa.yaml": "autoscaling",
}
# Of those, the ones mode ha has a block of its own for, under ha.<key>: on by default there.
PER_MODE = {"pdb.yaml", "hpa.yaml"}


def _values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return schema


def _actions(text: str) -> list[str]:
    """The inside of every {{ ... }}; fails on a stray or unclosed delimiter."""
    found: list[str] = []
    pos = 0
    while True:
        start, stray = text.find("{{", pos), text.find("}}", pos)
        if stray != -1 and (start == -1 or stray < start):
            raise AssertionError(f"'}}}}' without '{{{{' at offset {stray}")
        if start == -1:
            return found
        end = text.find("}}", start + 2)
        if end == -1:
            raise AssertionError(f"'{{{{' at offset {start} is never closed")
        inner = text[start + 2:end]
        if "{{" in inner and not inner.strip("- ").startswith("/*"):
            raise AssertionError(f"'{{{{' inside an action at offset {start}")
        found.append(inner)
        pos = end + 2


def _keyword(action: str) -> str | None:
    body = action.strip()
    body = body[1:].lstrip() if body.startswith("-") else body
    if body.startswith("/*"):
        return None
    match = re.match(r"(if|with|range|define|block|end|else)\b", body)
    return match[1] if match else None


def _helper_text() -> str:
    return (TEMPLATES / "_helpers.tpl").read_text()


def _pod_text() -> str:
    return POD.read_text()


def _leaves(tree: dict[str, Any], prefix: str = "") -> set[str]:
    """Paths of values.yaml that carry a value: scalars, lists and empty maps."""
    out: set[str] = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out |= _leaves(value, f"{path}.")
        else:
            out.add(path)
    return out


def render_config(values: dict[str, Any]) -> dict[str, Any]:
    """What "registry-proxy.config" in _helpers.tpl renders, done in Python.

    The defaults are read out of the helper itself, so this follows the
    template rather than a copy of it: keys .Values.config sets win; listen
    and data_dir are filled in when absent; tls.existingSecret adds the
    mounted files under config.tls; admin.listen is filled in from admin.port.
    """
    helper = _helper_text()
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
        action, keyword = parts[i], _keyword(parts[i])
        if keyword in ("end", "else"):
            break
        i += 1
        if keyword not in ("if", "with", "range"):
            out.append(_act(action, dot, root) if emit else "")
            continue
        # Blocks inside a branch not taken are skipped without evaluating them.
        value: Any = _evaluate(action.split(None, 1)[1], dot, root) if emit else None
        taken = emit and bool(value)
        if keyword == "range" and taken:
            items = list(value.values()) if isinstance(value, dict) else list(value)
            out += [_decide(parts, i, item, root, emit=True)[0] for item in items]
            i = _decide(parts, i, dot, root, emit=False)[1]
        else:
            body, i = _decide(parts, i, value if keyword == "with" else dot, root, emit=taken)
            out.append(body)
        while _keyword(parts[i]) == "else":
            condition = parts[i].split(None, 1)[1:]
            i += 1
            assert not condition or condition[0].startswith("if "), f"unsupported: else {condition[0]}"
            chosen = emit and not taken and (not condition or bool(_evaluate(condition[0][3:], dot, root)))
            body, i = _decide(parts, i, dot, root, emit=chosen)
            out.append(body)
            taken = taken or chosen
        assert _keyword(parts[i]) == "end"
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
            root[_VARIABLES][assignment[1]] = _evaluate(assignment[2], dot, root)
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
        text = yaml.safe_dump(_evaluate(to_yaml[1], dot, root), sort_keys=False).rstrip("\n")
        return "\n" + "\n".join(" " * int(to_yaml[2]) + line for line in text.splitlines())
    try:
        value = _evaluate(action, dot, root)
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


def _evaluate(expression: str, dot: Any, root: dict[str, Any]) -> Any:
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


# -- plain YAML and Chart.yaml ---------------------------------------------------------------------------------


def test_plain_yaml_files_parse() -> None:
    for name in ("Chart.yaml", "values.yaml"):
        assert isinstance(yaml.safe_load((CHART / name).read_text()), dict), name


def test_chart_yaml_has_the_required_fields() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "registry-proxy" == CHART.name
    assert chart["type"] == "application"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    assert isinstance(chart["appVersion"], str) and chart["appVersion"]
    assert chart["description"]


# -- templates as text -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ALL_TEMPLATES, ids=lambda p: p.name)
def test_template_delimiters_and_blocks_balance(path: Path) -> None:
    depth = 0
    for action in _actions(path.read_text()):
        keyword = _keyword(action)
        if keyword in ("if", "with", "range", "define", "block"):
            depth += 1
        elif keyword == "end":
            depth -= 1
            assert depth >= 0, f"{path.name}: 'end' without an opening block"
        elif keyword == "else":
            assert depth > 0, f"{path.name}: 'else' outside a block"
    assert depth == 0, f"{path.name}: {depth} block(s) never closed"


def test_every_included_helper_is_defined() -> None:
    defined = {name for path in TEMPLATES.glob("_*.tpl") for name in re.findall(r'define\s+"([^"]+)"', path.read_text())}
    assert set(EXPANDED) <= defined
    for path in ALL_TEMPLATES:
        for name in re.findall(r'\b(?:include|template)\s+"([^"]+)"', path.read_text()):
            assert name in defined, f"{path.name} includes undefined {name!r}"


def test_templates_included_by_path_exist() -> None:
    for path in ALL_TEMPLATES:
        for name in re.findall(r'\$\.Template\.BasePath\s+"/([^"]+)"', path.read_text()):
            assert (TEMPLATES / name).is_file(), f"{path.name} includes missing {name}"


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_one_resource_per_template(path: Path) -> None:
    assert len(re.findall(r"^kind:", path.read_text(), re.M)) == 1
    assert len(re.findall(r"^apiVersion:", path.read_text(), re.M)) == 1


@pytest.mark.parametrize("name,key", OPTIONAL.items())
def test_optional_resources_are_wrapped_in_enabled(name: str, key: str) -> None:
    text = (TEMPLATES / name).read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    if name in PER_MODE:
        chosen = re.fullmatch(rf'\{{\{{- \$(\w+) := ternary \.Values\.ha\.{key} \.Values\.{key} '
                              r'\(eq \.Values\.mode "ha"\) \}\}', lines[0])
        assert chosen, f"{name}: its settings are ha.{key} in mode ha, {key} otherwise"
        assert lines[1] == f"{{{{- if ${chosen[1]}.enabled }}}}"
        assert _values()["ha"][key]["enabled"] is True, f"mode ha has its {key} on by default"
    else:
        assert lines[0] == f"{{{{- if .Values.{key}.enabled }}}}"
    assert lines[-1] == "{{- end }}"
    # The first `if` closes with the file's last action, so all of it is inside.
    depth, actions = 0, _actions(text)
    for i, action in enumerate(actions):
        keyword = _keyword(action)
        if keyword in ("if", "with", "range"):
            depth += 1
        elif keyword == "end":
            depth -= 1
            if depth == 0:
                assert i == len(actions) - 1, f"{name}: content after the enabled block"
    assert _values()[key]["enabled"] is False, f"{key} is optional: off by default"


def test_every_values_path_in_templates_exists_in_values_yaml() -> None:
    values = _values()
    for path in ALL_TEMPLATES:
        for dotted in re.findall(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", path.read_text()):
            node: Any = values
            for part in dotted.strip(".").split("."):
                assert isinstance(node, dict) and part in node, f"{path.name}: .Values{dotted} is not in values.yaml"
                node = node[part]


# -- values.yaml and values.schema.json ------------------------------------------------------------------------


def test_values_validate_against_the_schema() -> None:
    schema = _schema()
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(_values())


def test_schema_describes_every_value_with_a_type() -> None:
    def walk(node: dict[str, Any], value: Any, path: str) -> None:
        assert "type" in node or "anyOf" in node, f"{path}: no type"
        assert node.get("description"), f"{path}: no description"
        if isinstance(value, dict) and "properties" in node:
            for key, sub in value.items():
                assert key in node["properties"], f"{path}.{key}: not in the schema"
                walk(node["properties"][key], sub, f"{path}.{key}")

    schema = _schema()
    for key, value in _values().items():
        assert key in schema["properties"], f"{key}: not in the schema"
        walk(schema["properties"][key], value, key)


def test_schema_refuses_what_the_proxy_would() -> None:
    validator = jsonschema.Draft7Validator(_schema())
    for bad in ({"replicas": 2},  # a typo of replicaCount
                {"config": {"cache": {"max_size": "lots"}}},
                {"config": {"registries": [{"adress": "quay.io"}]}},
                {"secretKey": {"value": "too-short"}},
                {"admin": {"token": "short"}}):
        values = _values()
        for key, sub in bad.items():
            values[key] = {**values.get(key, {}), **sub} if isinstance(sub, dict) else sub
        assert list(validator.iter_errors(values)), f"schema accepts {bad}"


REGENERATE = ("python -c 'import json; from proxy.config.schema import config_json_schema as c; "
              "p = \"charts/registry-proxy/values.schema.json\"; s = json.load(open(p)); "
              "s[\"properties\"][\"config\"] = c(); open(p, \"w\").write(json.dumps(s, indent=2) + \"\\n\")'")


def test_schema_config_is_the_one_the_proxy_reads_with() -> None:
    # The proxy's own field declarations, rendered: every key, type, enum and
    # pattern, so Helm refuses what the proxy would and accepts what it reads.
    assert _schema()["properties"]["config"] == config_json_schema(), f"regenerate it: {REGENERATE}"


def test_every_value_is_documented() -> None:
    documented = re.findall(r"^\s*## @param (\S+) \S", (CHART / "values.yaml").read_text(), re.M)
    assert len(documented) == len(set(documented)), "a key is documented twice"
    leaves = _leaves(_values())
    assert leaves - set(documented) == set(), "keys without '## @param'"
    assert set(documented) - leaves == set(), "'## @param' for keys that do not exist"


def test_security_context_defaults_are_the_secure_ones() -> None:
    values = _values()
    container, pod = values["securityContext"], values["podSecurityContext"]
    assert container["runAsNonRoot"] is True and pod["runAsNonRoot"] is True
    assert container["runAsUser"] == pod["runAsUser"] == 10001
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"]["drop"] == ["ALL"]
    assert container["seccompProfile"]["type"] == pod["seccompProfile"]["type"] == "RuntimeDefault"
    pod = _pod_text()
    assert "toYaml .Values.podSecurityContext | nindent 4" in pod
    assert "toYaml .Values.securityContext | nindent 8" in pod
    # The root filesystem is read-only: /tmp and the data volume are the writable places.
    assert re.search(r"- name: tmp\n\s+mountPath: /tmp", pod)
    assert re.search(r"- name: data\n\s+mountPath: /data\n", pod)
    for workload in ("statefulset.yaml", "deployment.yaml"):
        assert '  template:\n    {{- include "registry-proxy.podTemplate" . | nindent 4 }}\n' in (
            TEMPLATES / workload).read_text()


def test_defaults_keep_one_replica_and_persistence() -> None:
    values = _values()
    assert values["replicaCount"] == 1
    assert values["persistence"]["enabled"] is True
    assert values["service"]["port"] == values["containerPort"] == 5000
    assert values["admin"]["port"] == values["admin"]["service"]["port"] == 5001


# -- the config the chart renders, read by the proxy -----------------------------------------------------------


def test_default_config_loads_with_the_proxy_settings_parser(tmp_path: Path) -> None:
    values = _values()
    settings = _load(render_config(values), tmp_path)
    assert settings.listen == "0.0.0.0:5000"
    assert settings.admin_listen == ("0.0.0.0", 5001)
    assert settings.data_dir == Path("/data")
    assert settings.tls is None
    assert settings.metrics_public is True
    assert settings.log_format == "json"
    assert settings.file_settings["registry.default"] == "docker.io"


def test_config_keys_set_in_values_win_over_the_chart_defaults(tmp_path: Path) -> None:
    values = _values()
    values["config"]["listen"] = "0.0.0.0:6000"
    values["containerPort"] = 7000
    assert _load(render_config(values), tmp_path).listen == "0.0.0.0:6000"
    values = _values()
    values["containerPort"] = 7000
    assert _load(render_config(values), tmp_path).listen == "0.0.0.0:7000"


def test_tls_secret_files_are_what_the_proxy_needs(tmp_path: Path) -> None:
    values = _values()
    values["tls"]["existingSecret"] = "proxy-tls"
    values["config"]["tls"] = {"reload_interval": "10s"}
    config = render_config(values)
    # A kubernetes.io/tls Secret holds tls.crt and tls.key, mounted under one directory.
    cert_file, key_file = Path(config["tls"]["cert_file"]), Path(config["tls"]["key_file"])
    assert (cert_file.name, key_file.name) == ("tls.crt", "tls.key")
    assert cert_file.parent == key_file.parent == Path("/etc/registry-proxy/tls")
    assert 'mountPath: /etc/registry-proxy/tls\n' in _pod_text()
    ca = trustme.CA()
    cert = ca.issue_cert("registry-proxy.example")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "tls.crt"))
    cert.private_key_pem.write_to_path(str(tmp_path / "tls.key"))
    config["tls"]["cert_file"] = str(tmp_path / cert_file.name)
    config["tls"]["key_file"] = str(tmp_path / key_file.name)
    settings = _load(config, tmp_path)
    assert settings.tls is not None and settings.tls.reload_interval == 10.0


def test_default_cache_fits_the_volume(tmp_path: Path) -> None:
    values = _values()
    settings = _load(render_config(values), tmp_path)
    quantity = re.fullmatch(r"([0-9]+)(Ki|Mi|Gi|Ti)?", values["persistence"]["size"])
    assert quantity
    volume = int(quantity[1]) * {None: 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}[quantity[2]]
    assert settings.cache.max_size + settings.cache.min_free < volume


# -- what the templates hand the proxy -------------------------------------------------------------------------


def test_env_names_are_the_ones_the_proxy_reads(tmp_path: Path) -> None:
    pod = _pod_text()
    names = re.findall(r"- name: (REGISTRY_PROXY_\w+)", pod)
    assert sorted(names) == sorted({ADMIN_TOKEN_ENV, KEY_ENV, URL_ENV, LISTEN_ENV, DATA_DIR_ENV, STATE_URL_ENV})
    # The admin commands run in the pod call the admin listener, not the default URL's port.
    assert re.search(rf'- name: {URL_ENV}\n\s+value: \{{\{{ printf "%s://127\.0\.0\.1:%d" \(\$scheme \| lower\) '
                     r"\(int \.Values\.admin\.port\) \| quote \}\}", pod)
    settings = load_settings(None, environ={"REGISTRY_PROXY_LISTEN": "0.0.0.0:5000",
                                            "REGISTRY_PROXY_DATA_DIR": str(tmp_path)})
    assert (settings.listen, settings.data_dir) == ("0.0.0.0:5000", tmp_path)


def test_generated_secrets_are_accepted_by_the_proxy(tmp_path: Path) -> None:
    text = (TEMPLATES / "secret.yaml").read_text()
    token_length = re.search(r"admin-token: \{\{ randAlphaNum (\d+) \| b64enc \| quote \}\}", text)
    key_length = re.search(r"secret-key: \{\{ randAlphaNum (\d+) \| b64enc \| b64enc \| quote \}\}", text)
    assert token_length and key_length
    alphabet = string.ascii_letters + string.digits
    token = "".join(secrets.choice(alphabet) for _ in range(int(token_length[1])))
    settings = load_settings(None, data_dir=str(tmp_path), environ={})
    assert resolve_admin_token(settings.admin_token_file, settings.data_dir, {ADMIN_TOKEN_ENV: token}).value == token
    assert len(token) >= MIN_LENGTH
    # The env value is the Secret's data decoded once: base64 of the random text.
    key_text = base64.b64encode("".join(secrets.choice(alphabet) for _ in range(int(key_length[1]))).encode())
    assert len(load_key(tmp_path / "unused.key", {KEY_ENV: key_text.decode()})) == 32


def test_probes_and_metrics_use_routes_the_proxy_serves() -> None:
    app = web.Application()
    setup_metrics_routes(app)
    setup_health_routes(app)
    served = {resource.canonical for resource in app.router.resources()}
    pod = _pod_text()
    probed = set(re.findall(r"path: (/\S+)", pod))
    assert probed == {"/healthz", "/readyz"}
    # On the registry port: the admin listener serves neither.
    assert re.findall(r"path: /\w+\n\s+port: (\w+)", pod) == ["registry"] * 3
    assert probed <= served
    assert "path: /metrics" in (TEMPLATES / "servicemonitor.yaml").read_text()
    assert "/metrics" in served


def test_config_mount_is_the_file_the_proxy_is_started_with() -> None:
    pod = _pod_text()
    args = re.search(r'args: \["serve", "--config", "([^"]+)"\]', pod)
    assert args and f"mountPath: {args[1]}\n" in pod
    assert re.search(r"checksum/config: \{\{ include \(print \$\.Template\.BasePath \"/configmap\.yaml\"\) \. \| sha256sum \}\}",
                     pod)
    # password_file: /etc/registry-proxy/secrets/<name> must find the credential files.
    assert "mountPath: /etc/registry-proxy/secrets\n" in pod


# -- the admin port: admin API, status page and /metrics, kept off the network by default -------------------------


def _ingress_rules(values: dict[str, Any]) -> list[dict[str, Any]]:
    policy = manifest("networkpolicy.yaml", values)
    assert policy is not None
    rules: list[dict[str, Any]] = policy["spec"]["ingress"]
    return rules


def test_service_and_ingress_expose_only_the_registry_port() -> None:
    values = _values()
    values["ingress"]["enabled"] = True
    assert manifest("service-admin.yaml", values) is None
    # Opening the admin port elsewhere leaves these two as they are.
    for admin_service in (False, True):
        values["admin"]["service"]["enabled"] = values["serviceMonitor"]["enabled"] = admin_service
        values["service"]["type"] = "LoadBalancer" if admin_service else "ClusterIP"
        service, ingress = manifest("service.yaml", values), manifest("ingress.yaml", values)
        assert service and ingress
        assert [(port["name"], port["port"], port["targetPort"]) for port in service["spec"]["ports"]] == [
            ("registry", values["service"]["port"], "registry")]
        backends = [path["backend"]["service"] for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]]
        assert [backend["port"] for backend in backends] == [{"name": "registry"}]
    assert re.findall(r"- name: (\w+)\n\s+containerPort: \{\{ (\S+) \}\}", _pod_text()) == [
        ("registry", ".Values.containerPort"), ("admin", ".Values.admin.port")]


def test_admin_service_is_opt_in_and_inside_the_cluster() -> None:
    values = _values()
    values["service"]["type"] = "NodePort"
    values["admin"]["service"]["enabled"] = True
    service = manifest("service-admin.yaml", values)
    assert service is not None
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "admin", "port": values["admin"]["service"]["port"],
                                         "targetPort": "admin", "protocol": "TCP"}]


def test_behind_the_ingress_the_token_realm_is_the_ingress_host(tmp_path: Path) -> None:
    values = _values()
    assert "external_url" not in render_config(values)
    values["ingress"].update(enabled=True, hosts=[{"host": "proxy.example.com", "paths": [{"path": "/"}]}])
    assert _load(render_config(values), tmp_path).external_url == "http://proxy.example.com"
    values["ingress"]["tls"] = [{"secretName": "proxy-tls", "hosts": ["proxy.example.com"]}]
    assert _load(render_config(values), tmp_path).external_url == "https://proxy.example.com"
    values["config"]["external_url"] = "https://registry.example.com"
    assert _load(render_config(values), tmp_path).external_url == "https://registry.example.com"


def test_config_listens_for_admin_on_the_admin_port(tmp_path: Path) -> None:
    values = _values()
    assert render_config(values)["admin"]["listen"] == f"0.0.0.0:{values['admin']['port']}"
    values["admin"]["port"] = 6001
    values["config"]["admin"] = {"token_file": "/data/admin-token"}
    settings = _load(render_config(values), tmp_path)
    assert settings.admin_listen == ("0.0.0.0", 6001)
    assert settings.admin_token_file == Path("/data/admin-token")
    values["config"]["admin"]["listen"] = "0.0.0.0:7001"
    assert _load(render_config(values), tmp_path).admin_listen == ("0.0.0.0", 7001)
    # One port cannot hold both listeners: the chart refuses to render it.
    assert re.search(r'if eq \(int \.Values\.admin\.port\) \(int \.Values\.containerPort\) -\}\}\n\{\{- fail "',
                     _helper_text())


def test_network_policy_admits_the_admin_port_only_from_named_sources() -> None:
    values = _values()
    values["networkPolicy"]["enabled"] = True
    registry_rule = {"ports": [{"port": values["containerPort"], "protocol": "TCP"}]}
    assert _ingress_rules(values) == [registry_rule]
    # A rule without `from` would admit everyone: no sources, no rule.
    values["serviceMonitor"]["enabled"] = True
    values["admin"]["networkPolicy"]["metricsFrom"] = []
    assert _ingress_rules(values) == [registry_rule]

    admin_port = [{"port": values["admin"]["port"], "protocol": "TCP"}]
    ci = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ci"}}}
    values["admin"]["networkPolicy"]["ingressFrom"] = [ci]
    assert _ingress_rules(values) == [registry_rule, {"ports": admin_port, "from": [ci]}]
    # Prometheus is admitted while the ServiceMonitor asks it to scrape.
    scrapers = _values()["admin"]["networkPolicy"]["metricsFrom"]
    assert scrapers, "the ServiceMonitor's scrapers are admitted by default"
    values["admin"]["networkPolicy"]["metricsFrom"] = scrapers
    assert _ingress_rules(values) == [registry_rule, {"ports": admin_port, "from": [ci, *scrapers]}]
    values["serviceMonitor"]["enabled"] = False
    values["admin"]["networkPolicy"]["ingressFrom"] = []
    assert _ingress_rules(values) == [registry_rule]


def test_service_monitor_scrapes_the_admin_port() -> None:
    values = _values()
    values["serviceMonitor"]["enabled"] = True
    service = manifest("service-admin.yaml", values)
    assert service is not None, "a ServiceMonitor finds its targets through a Service"
    assert [port["name"] for port in service["spec"]["ports"]] == ["admin"]
    monitor = (TEMPLATES / "servicemonitor.yaml").read_text()
    assert re.findall(r"- port: (\S+)\n\s+path: (\S+)", monitor) == [("admin", "/metrics")]
    # It selects the admin Service alone, by the component only that one carries.
    selector = re.search(r"selector:\n\s+matchLabels:\n(.*?)\n  endpoints:", monitor, re.S)
    assert selector and 'include "registry-proxy.selectorLabels"' in selector[1]
    assert re.findall(r"app\.kubernetes\.io/component: (\S+)", selector[1]) == service["metadata"]["labels"][
        "app.kubernetes.io/component"].split()
    assert "app.kubernetes.io/component" not in (TEMPLATES / "service.yaml").read_text()


def test_notes_reach_the_admin_api_through_a_port_forward() -> None:
    notes = (TEMPLATES / "NOTES.txt").read_text()
    assert "{{- $adminPort := int .Values.admin.port }}" in notes
    # The StatefulSet's first pod, or any of the Deployment's.
    assert '{{- $pod := ternary (printf "deploy/%s" $fullname) (printf "pod/%s-0" $fullname) (eq .Values.mode "ha") }}' \
        in notes
    forward = re.search(r"kubectl port-forward --namespace \{\{ \$ns \}\} \{\{ \$pod \}\} "
                        r"(\d+):\{\{ \$adminPort \}\}\n"
                        r"\s+export REGISTRY_PROXY_URL=\{\{ \$scheme \}\}://127\.0\.0\.1:(\d+)\n", notes)
    assert forward and forward[1] == forward[2]



# -- mode single and mode ha ----------------------------------------------------------------------------------

HA_EXAMPLE = CHART / "ci" / "ha-values.yaml"


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Values as helm merges a -f file over values.yaml: maps key by key, everything else replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _ha_values(**override: Any) -> dict[str, Any]:
    values = _merged(_values(), yaml.safe_load(HA_EXAMPLE.read_text()))
    return _merged(values, override)


def _rendered(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every resource the chart renders for these values, by template; the chart's Secret: see _own_secret."""
    return {path.name: found for path in MANIFESTS
            if path.name != "secret.yaml" and (found := manifest(path.name, values)) is not None}


def _own_secret(values: dict[str, Any]) -> bool:
    """Whether secret.yaml renders (its body reads the cluster through lookup, so only its guard is decided)."""
    guard = re.search(r"^\{\{- if (.+) \}\}$", (TEMPLATES / "secret.yaml").read_text(), re.M)
    assert guard
    root = {"Values": values, _VARIABLES: {}}
    return bool(_evaluate(guard[1], root, root))


def _env(workload: dict[str, Any]) -> dict[str, Any]:
    [container] = workload["spec"]["template"]["spec"]["containers"]
    return {entry["name"]: entry.get("valueFrom", {}).get("secretKeyRef") or entry.get("value")
            for entry in container["env"]}


def test_mode_single_is_the_default_and_renders_as_before() -> None:
    values = _values()
    assert values["mode"] == "single"
    rendered = _rendered(values)
    assert "statefulset.yaml" in rendered and _own_secret(values)
    assert not {"deployment.yaml", "hpa.yaml", "pdb.yaml"} & set(rendered)
    statefulset = rendered["statefulset.yaml"]
    assert statefulset["spec"]["replicas"] == 1
    # The data volume is the claim template's, not a volume of the pod.
    assert [claim["metadata"]["name"] for claim in statefulset["spec"]["volumeClaimTemplates"]] == ["data"]
    assert "data" not in {volume["name"] for volume in statefulset["spec"]["template"]["spec"]["volumes"]}
    assert "affinity" not in statefulset["spec"]["template"]["spec"]
    assert set(_env(statefulset)) == {LISTEN_ENV, DATA_DIR_ENV, URL_ENV, ADMIN_TOKEN_ENV, KEY_ENV}
    values["autoscaling"]["enabled"] = values["podDisruptionBudget"]["enabled"] = True
    rendered = _rendered(values)
    assert rendered["hpa.yaml"]["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"
    assert "replicas" not in rendered["statefulset.yaml"]["spec"]
    assert rendered["pdb.yaml"]["spec"]["maxUnavailable"] == 1


def test_mode_ha_runs_a_deployment_with_n_replicas_and_no_claims() -> None:
    values = _ha_values(ha={"replicaCount": 4, "autoscaling": {"enabled": False}})
    rendered = _rendered(values)
    assert "statefulset.yaml" not in rendered and "hpa.yaml" not in rendered
    deployment = rendered["deployment.yaml"]
    assert deployment["kind"] == "Deployment"
    assert deployment["spec"]["replicas"] == 4
    assert deployment["spec"]["strategy"] == values["ha"]["updateStrategy"]
    assert "volumeClaimTemplates" not in deployment["spec"]
    volumes = {volume["name"]: volume for volume in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"] == {"name": "data", "emptyDir": {"sizeLimit": values["ha"]["dataVolume"]["sizeLimit"]}}
    assert not any("persistentVolumeClaim" in volume for volume in volumes.values())
    assert not any(resource["kind"] == "PersistentVolumeClaim" for resource in rendered.values())
    # Both secrets come from the operator's Secrets: the chart renders none of its own.
    assert not _own_secret(values)


def test_mode_ha_autoscales_the_deployment_on_cpu() -> None:
    values = _ha_values()
    rendered = _rendered(values)
    hpa, deployment = rendered["hpa.yaml"], rendered["deployment.yaml"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["kind"] == deployment["kind"] == "Deployment"
    hpa_text, deployment_text = (TEMPLATES / "hpa.yaml").read_text(), (TEMPLATES / "deployment.yaml").read_text()
    assert '    name: {{ include "registry-proxy.fullname" . }}\n' in hpa_text
    assert 'metadata:\n  name: {{ include "registry-proxy.fullname" . }}\n' in deployment_text
    # The HorizontalPodAutoscaler owns the count: a replicas field would fight it on every upgrade.
    assert "replicas" not in deployment["spec"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"] == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}
    assert _values()["resources"]["requests"]["cpu"], "the HPA measures utilization against the CPU request"
    del values["resources"]["requests"]["cpu"]
    with pytest.raises(RenderFailed, match=r"needs resources\.requests\.cpu"):
        manifest("hpa.yaml", values)


def test_mode_ha_has_a_disruption_budget() -> None:
    assert _rendered(_ha_values())["pdb.yaml"]["spec"]["maxUnavailable"] == 1
    budget = manifest("pdb.yaml", _ha_values(ha={"podDisruptionBudget": {"minAvailable": "50%"}}))
    assert budget is not None
    assert budget["spec"]["minAvailable"] == "50%" and "maxUnavailable" not in budget["spec"]
    assert manifest("pdb.yaml", _ha_values(ha={"podDisruptionBudget": {"enabled": False}})) is None


def test_mode_ha_spreads_replicas_over_nodes_unless_told_otherwise() -> None:
    def affinity(values: dict[str, Any]) -> Any:
        deployment = manifest("deployment.yaml", values)
        assert deployment is not None
        return deployment["spec"]["template"]["spec"].get("affinity")

    soft = affinity(_ha_values())["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert [term["podAffinityTerm"]["topologyKey"] for term in soft] == ["kubernetes.io/hostname"]
    hard = affinity(_ha_values(ha={"podAntiAffinityPreset": "hard"}))["podAntiAffinity"]
    assert [term["topologyKey"] for term in hard["requiredDuringSchedulingIgnoredDuringExecution"]] == [
        "kubernetes.io/hostname"]
    assert affinity(_ha_values(ha={"podAntiAffinityPreset": ""})) is None
    own: dict[str, Any] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}
    assert affinity(_ha_values(affinity=own)) == own


def test_mode_ha_takes_credentials_from_the_named_secrets() -> None:
    values = _ha_values(externalS3={"existingSecret": "bucket-keys"})
    deployment = manifest("deployment.yaml", values)
    assert deployment is not None
    env = _env(deployment)
    assert env["PGPASSWORD"] == {"name": "registry-proxy-postgres", "key": "password"}
    assert STATE_URL_ENV not in env
    assert env["AWS_ACCESS_KEY_ID"] == {"name": "bucket-keys", "key": "access-key-id"}
    assert env["AWS_SECRET_ACCESS_KEY"] == {"name": "bucket-keys", "key": "secret-access-key"}
    # The key and the token: the Secrets' names come from the helpers, which prefer existingSecret.
    assert set(env[ADMIN_TOKEN_ENV]) == set(env[KEY_ENV]) == {"name", "key"}
    helpers = _helper_text()
    for block, key in (("admin", "existingSecretKey"), ("secretKey", "existingSecretKey")):
        assert f'{{{{- .Values.{block}.existingSecret | default (include "registry-proxy.fullname" .) -}}}}' in helpers
        assert f"{{{{- if .Values.{block}.existingSecret -}}}}{{{{ .Values.{block}.{key} }}}}" in helpers

    # The whole URL from a Secret instead: no config.state.url needed.
    values = _ha_values(externalDatabase={"existingSecret": "pg-url", "existingSecretUrlKey": "url",
                                          "existingSecretPasswordKey": ""})
    del values["config"]["state"]
    deployment = manifest("deployment.yaml", values)
    assert deployment is not None
    env = _env(deployment)
    assert env[STATE_URL_ENV] == {"name": "pg-url", "key": "url"} and "PGPASSWORD" not in env


def test_mode_ha_reaches_the_bucket_through_irsa_without_keys() -> None:
    values = _ha_values()
    assert not values["externalS3"]["existingSecret"]
    deployment, account = manifest("deployment.yaml", values), manifest("serviceaccount.yaml", values)
    assert deployment is not None and account is not None
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(_env(deployment))
    assert account["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/registry-proxy"}
    # Web identity needs no Kubernetes API token in the pod.
    assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


@pytest.mark.parametrize("change,message", [
    ({"secretKey": {"existingSecret": ""}}, "mode ha needs secretKey.existingSecret"),
    ({"admin": {"existingSecret": ""}}, "mode ha needs admin.existingSecret"),
    ({"config": {"storage": {"backend": "filesystem"}}}, "mode ha needs config.storage.backend: s3"),
    ({"config": {"storage": {"bucket": ""}}}, "mode ha needs config.storage.bucket"),
    ({"config": {"state": {"url": ""}}}, "set config.state.url"),
    ({"config": {"state": {"url": ""}}, "externalDatabase": {"existingSecretUrlKey": ""}}, "set config.state.url"),
])
def test_mode_ha_refuses_to_render_without_what_replicas_share(change: dict[str, Any], message: str) -> None:
    assert manifest("deployment.yaml", _ha_values()) is not None
    with pytest.raises(RenderFailed, match=re.escape(message)):
        manifest("deployment.yaml", _ha_values(**change))


def test_mode_ha_checks_name_the_values_they_ask_for() -> None:
    values = _values()
    for message in re.findall(r'fail "([^"]+)"', (TEMPLATES / "deployment.yaml").read_text()):
        for dotted in re.findall(r"\b((?:config|secretKey|admin|externalDatabase)(?:\.[A-Za-z_]+)+)", message):
            node: Any = values if not dotted.startswith("config.") else {"config": config_json_schema()["properties"]}
            for part in dotted.split("."):
                node = node.get(part) if isinstance(node, dict) else None
                node = node.get("properties", node) if isinstance(node, dict) and "type" in node else node
            assert node is not None, f"{message!r} names {dotted}, which does not exist"


def test_mode_ha_config_is_one_the_proxy_accepts(tmp_path: Path) -> None:
    values = _ha_values()
    jsonschema.Draft7Validator(_schema()).validate(values)
    settings = _load(render_config(values), tmp_path)
    assert settings.storage.backend == "s3" and settings.storage.shared
    assert settings.storage.bucket == "registry-proxy-cache"
    assert settings.state.url == values["config"]["state"]["url"]
    # The emptyDir holds the local tier and the downloads in flight; past its limit the pod is evicted.
    limit = re.fullmatch(r"([0-9]+)Gi", values["ha"]["dataVolume"]["sizeLimit"])
    assert limit and settings.storage.local_size + 4 * 1024**3 <= int(limit[1]) * 1024**3


def test_schema_refuses_an_unknown_mode() -> None:
    validator = jsonschema.Draft7Validator(_schema())
    assert list(validator.iter_errors(_ha_values(mode="cluster")))
    assert list(validator.iter_errors(_ha_values(ha={"replicas": 3})))
    assert not list(validator.iter_errors(_ha_values()))


def test_readme_shows_the_ha_set_up_the_tests_check() -> None:
    # The values rendered above, and the replicas' config that test_settings loads.
    readme = (CHART.parents[1] / "README.md").read_text()
    assert f"```yaml\n{HA_EXAMPLE.read_text()}```" in readme
    assert f"```yaml\n{(CHART.parents[1] / 'config' / 'examples' / 'replicas.yaml').read_text()}```" in readme
