"""The chart's two modes, rendered with chart_reader.

mode single (the default) is a StatefulSet with a claim per pod, as before;
mode ha is a Deployment of replicas that share the cache in S3 and the state
in PostgreSQL, with an HPA, a PodDisruptionBudget, no claims, and credentials
from the operator's Secrets. A render of mode ha missing what the replicas
must share fails with a message naming the value to set.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml
from proxy.cli.client import URL_ENV
from proxy.config.schema import config_json_schema
from proxy.config.settings import DATA_DIR_ENV, LISTEN_ENV, STATE_URL_ENV
from proxy.store.admin_token import ADMIN_TOKEN_ENV
from proxy.store.crypto import KEY_ENV

from .chart_reader import (
    CHART,
    TEMPLATES,
    RenderFailed,
    evaluate,
    helper_text,
    load_config,
    load_schema,
    load_values,
    manifest,
    render_config,
)

MANIFESTS = sorted(p for p in TEMPLATES.glob("*.yaml"))

HA_EXAMPLE = CHART / "examples" / "ha-values.yaml"


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Values as helm merges a -f file over values.yaml: maps key by key, everything else replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _ha_values(**override: Any) -> dict[str, Any]:
    values = _merged(load_values(), yaml.safe_load(HA_EXAMPLE.read_text()))
    return _merged(values, override)


def _rendered(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every resource the chart renders for these values, by template; the chart's Secret: see _own_secret."""
    return {path.name: found for path in MANIFESTS
            if path.name != "secret.yaml" and (found := manifest(path.name, values)) is not None}


def _own_secret(values: dict[str, Any]) -> bool:
    """Whether secret.yaml renders (its body reads the cluster through lookup, so only its guard is decided)."""
    guard = re.search(r"^\{\{- if (.+) \}\}$", (TEMPLATES / "secret.yaml").read_text(), re.M)
    assert guard
    root = {"Values": values}
    return bool(evaluate(guard[1], root, root))


def _env(workload: dict[str, Any]) -> dict[str, Any]:
    [container] = workload["spec"]["template"]["spec"]["containers"]
    return {entry["name"]: entry.get("valueFrom", {}).get("secretKeyRef") or entry.get("value")
            for entry in container["env"]}


def test_mode_single_is_the_default_and_renders_as_before() -> None:
    values = load_values()
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
    assert load_values()["resources"]["requests"]["cpu"], "the HPA measures utilization against the CPU request"
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
    helpers = helper_text()
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
    values = load_values()
    for message in re.findall(r'fail "([^"]+)"', (TEMPLATES / "deployment.yaml").read_text()):
        for dotted in re.findall(r"\b((?:config|secretKey|admin|externalDatabase)(?:\.[A-Za-z_]+)+)", message):
            node: Any = values if not dotted.startswith("config.") else {"config": config_json_schema()["properties"]}
            for part in dotted.split("."):
                node = node.get(part) if isinstance(node, dict) else None
                node = node.get("properties", node) if isinstance(node, dict) and "type" in node else node
            assert node is not None, f"{message!r} names {dotted}, which does not exist"


def test_mode_ha_config_is_one_the_proxy_accepts(tmp_path: Path) -> None:
    values = _ha_values()
    jsonschema.Draft7Validator(load_schema()).validate(values)
    settings = load_config(render_config(values), tmp_path)
    assert settings.storage.backend == "s3" and settings.storage.shared
    assert settings.storage.bucket == "registry-proxy-cache"
    assert settings.state.url == values["config"]["state"]["url"]
    # The emptyDir holds the local tier and the downloads in flight; past its limit the pod is evicted.
    limit = re.fullmatch(r"([0-9]+)Gi", values["ha"]["dataVolume"]["sizeLimit"])
    assert limit and settings.storage.local_size + 4 * 1024**3 <= int(limit[1]) * 1024**3


def test_schema_refuses_an_unknown_mode() -> None:
    validator = jsonschema.Draft7Validator(load_schema())
    assert list(validator.iter_errors(_ha_values(mode="cluster")))
    assert list(validator.iter_errors(_ha_values(ha={"replicas": 3})))
    assert not list(validator.iter_errors(_ha_values()))


def test_readme_shows_the_ha_set_up_the_tests_check() -> None:
    # The values rendered above, and the replicas' config that test_settings loads.
    readme = (CHART.parents[1] / "README.md").read_text()
    assert f"```yaml\n{HA_EXAMPLE.read_text()}```" in readme
    assert f"```yaml\n{(CHART.parents[1] / 'config' / 'examples' / 'replicas.yaml').read_text()}```" in readme
