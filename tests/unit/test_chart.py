"""The Helm chart in charts/registry-proxy, checked without a helm binary.

Templates are Go templates, so they are checked as text: delimiters and
blocks balance, every include names a helper that exists, every .Values path
exists, one resource per file. The plain YAML (Chart.yaml, values.yaml) is
parsed, validated against values.schema.json, and the proxy config the chart
renders by default is loaded with the proxy's own settings parser, so the
chart cannot ship a config the proxy refuses. Which ports a Service, Ingress
or NetworkPolicy opens is read from the template with its if/with/range
blocks decided for given values (``chart_reader``). How the two modes render,
single and ha: test_chart_modes.py.
"""

from __future__ import annotations

import base64
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
from proxy.config.schema import config_json_schema
from proxy.config.settings import DATA_DIR_ENV, LISTEN_ENV, STATE_URL_ENV, load_settings
from proxy.store.admin_token import ADMIN_TOKEN_ENV, MIN_LENGTH, resolve_admin_token
from proxy.store.crypto import KEY_ENV, load_key

from .chart_reader import (
    CHART,
    EXPANDED,
    POD,
    TEMPLATES,
    block_keyword,
    helper_text,
    load_config,
    load_schema,
    load_values,
    manifest,
    render_config,
)

MANIFESTS = sorted(p for p in TEMPLATES.glob("*.yaml"))
ALL_TEMPLATES = sorted(p for p in TEMPLATES.iterdir() if p.suffix in (".yaml", ".tpl", ".txt"))

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
        keyword = block_keyword(action)
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
        assert load_values()["ha"][key]["enabled"] is True, f"mode ha has its {key} on by default"
    else:
        assert lines[0] == f"{{{{- if .Values.{key}.enabled }}}}"
    assert lines[-1] == "{{- end }}"
    # The first `if` closes with the file's last action, so all of it is inside.
    depth, actions = 0, _actions(text)
    for i, action in enumerate(actions):
        keyword = block_keyword(action)
        if keyword in ("if", "with", "range"):
            depth += 1
        elif keyword == "end":
            depth -= 1
            if depth == 0:
                assert i == len(actions) - 1, f"{name}: content after the enabled block"
    assert load_values()[key]["enabled"] is False, f"{key} is optional: off by default"


def test_every_values_path_in_templates_exists_in_values_yaml() -> None:
    values = load_values()
    for path in ALL_TEMPLATES:
        for dotted in re.findall(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", path.read_text()):
            node: Any = values
            for part in dotted.strip(".").split("."):
                assert isinstance(node, dict) and part in node, f"{path.name}: .Values{dotted} is not in values.yaml"
                node = node[part]


# -- values.yaml and values.schema.json ------------------------------------------------------------------------


def test_values_validate_against_the_schema() -> None:
    schema = load_schema()
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(load_values())


def test_schema_describes_every_value_with_a_type() -> None:
    def walk(node: dict[str, Any], value: Any, path: str) -> None:
        assert "type" in node or "anyOf" in node, f"{path}: no type"
        assert node.get("description"), f"{path}: no description"
        if isinstance(value, dict) and "properties" in node:
            for key, sub in value.items():
                assert key in node["properties"], f"{path}.{key}: not in the schema"
                walk(node["properties"][key], sub, f"{path}.{key}")

    schema = load_schema()
    for key, value in load_values().items():
        assert key in schema["properties"], f"{key}: not in the schema"
        walk(schema["properties"][key], value, key)


def test_schema_refuses_what_the_proxy_would() -> None:
    validator = jsonschema.Draft7Validator(load_schema())
    for bad in ({"replicas": 2},  # a typo of replicaCount
                {"config": {"cache": {"max_size": "lots"}}},
                {"config": {"registries": [{"adress": "quay.io"}]}},
                {"secretKey": {"value": "too-short"}},
                {"admin": {"token": "short"}}):
        values = load_values()
        for key, sub in bad.items():
            values[key] = {**values.get(key, {}), **sub} if isinstance(sub, dict) else sub
        assert list(validator.iter_errors(values)), f"schema accepts {bad}"


REGENERATE = ("python -c 'import json; from proxy.config.schema import config_json_schema as c; "
              "p = \"charts/registry-proxy/values.schema.json\"; s = json.load(open(p)); "
              "s[\"properties\"][\"config\"] = c(); open(p, \"w\").write(json.dumps(s, indent=2) + \"\\n\")'")


def test_schema_config_is_the_one_the_proxy_reads_with() -> None:
    # The proxy's own field declarations, rendered: every key, type, enum and
    # pattern, so Helm refuses what the proxy would and accepts what it reads.
    assert load_schema()["properties"]["config"] == config_json_schema(), f"regenerate it: {REGENERATE}"


def test_every_value_is_documented() -> None:
    documented = re.findall(r"^\s*## @param (\S+) \S", (CHART / "values.yaml").read_text(), re.M)
    assert len(documented) == len(set(documented)), "a key is documented twice"
    leaves = _leaves(load_values())
    assert leaves - set(documented) == set(), "keys without '## @param'"
    assert set(documented) - leaves == set(), "'## @param' for keys that do not exist"


def test_security_context_defaults_are_the_secure_ones() -> None:
    values = load_values()
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
    values = load_values()
    assert values["replicaCount"] == 1
    assert values["persistence"]["enabled"] is True
    assert values["service"]["port"] == values["containerPort"] == 5000
    assert values["admin"]["port"] == values["admin"]["service"]["port"] == 5001


# -- the config the chart renders, read by the proxy -----------------------------------------------------------


def test_default_config_loads_with_the_proxy_settings_parser(tmp_path: Path) -> None:
    values = load_values()
    settings = load_config(render_config(values), tmp_path)
    assert settings.listen == "0.0.0.0:5000"
    assert settings.admin_listen == ("0.0.0.0", 5001)
    assert settings.data_dir == Path("/data")
    assert settings.tls is None
    assert settings.metrics_public is True
    assert settings.log_format == "json"
    assert settings.file_settings["registry.default"] == "docker.io"


def test_config_keys_set_in_values_win_over_the_chart_defaults(tmp_path: Path) -> None:
    values = load_values()
    values["config"]["listen"] = "0.0.0.0:6000"
    values["containerPort"] = 7000
    assert load_config(render_config(values), tmp_path).listen == "0.0.0.0:6000"
    values = load_values()
    values["containerPort"] = 7000
    assert load_config(render_config(values), tmp_path).listen == "0.0.0.0:7000"


def test_tls_secret_files_are_what_the_proxy_needs(tmp_path: Path) -> None:
    values = load_values()
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
    settings = load_config(config, tmp_path)
    assert settings.tls is not None and settings.tls.reload_interval == 10.0


def test_default_cache_fits_the_volume(tmp_path: Path) -> None:
    values = load_values()
    settings = load_config(render_config(values), tmp_path)
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
    values = load_values()
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
    values = load_values()
    values["service"]["type"] = "NodePort"
    values["admin"]["service"]["enabled"] = True
    service = manifest("service-admin.yaml", values)
    assert service is not None
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "admin", "port": values["admin"]["service"]["port"],
                                         "targetPort": "admin", "protocol": "TCP"}]


def test_behind_the_ingress_the_token_realm_is_the_ingress_host(tmp_path: Path) -> None:
    values = load_values()
    assert "external_url" not in render_config(values)
    values["ingress"].update(enabled=True, hosts=[{"host": "proxy.example.com", "paths": [{"path": "/"}]}])
    assert load_config(render_config(values), tmp_path).external_url == "http://proxy.example.com"
    values["ingress"]["tls"] = [{"secretName": "proxy-tls", "hosts": ["proxy.example.com"]}]
    assert load_config(render_config(values), tmp_path).external_url == "https://proxy.example.com"
    values["config"]["external_url"] = "https://registry.example.com"
    assert load_config(render_config(values), tmp_path).external_url == "https://registry.example.com"


def test_config_listens_for_admin_on_the_admin_port(tmp_path: Path) -> None:
    values = load_values()
    assert render_config(values)["admin"]["listen"] == f"0.0.0.0:{values['admin']['port']}"
    values["admin"]["port"] = 6001
    values["config"]["admin"] = {"token_file": "/data/admin-token"}
    settings = load_config(render_config(values), tmp_path)
    assert settings.admin_listen == ("0.0.0.0", 6001)
    assert settings.admin_token_file == Path("/data/admin-token")
    values["config"]["admin"]["listen"] = "0.0.0.0:7001"
    assert load_config(render_config(values), tmp_path).admin_listen == ("0.0.0.0", 7001)
    # One port cannot hold both listeners: the chart refuses to render it.
    assert re.search(r'if eq \(int \.Values\.admin\.port\) \(int \.Values\.containerPort\) -\}\}\n\{\{- fail "',
                     helper_text())


def test_network_policy_admits_the_admin_port_only_from_named_sources() -> None:
    values = load_values()
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
    scrapers = load_values()["admin"]["networkPolicy"]["metricsFrom"]
    assert scrapers, "the ServiceMonitor's scrapers are admitted by default"
    values["admin"]["networkPolicy"]["metricsFrom"] = scrapers
    assert _ingress_rules(values) == [registry_rule, {"ports": admin_port, "from": [ci, *scrapers]}]
    values["serviceMonitor"]["enabled"] = False
    values["admin"]["networkPolicy"]["ingressFrom"] = []
    assert _ingress_rules(values) == [registry_rule]


def test_service_monitor_scrapes_the_admin_port() -> None:
    values = load_values()
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
