"""The Helm chart: lint, render, Kubernetes schemas (strict), and what each object must hold.

Rendering is `helm template` (no cluster); schemas are kubernetes-validate's for the
oldest Kubernetes the chart supports and a current one, so a removed or unknown API
version, a misspelt field or a wrong type fails here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import ALERTS, CHART, DASHBOARD, KUBE_VERSIONS, ROOT, helm, promtool, run

MINIMAL = [
    "--set",
    "kafka.bootstrapServers=kafka:9092",
    "--set",
    "audit.hmacKey.existingSecret=loopwise-audit",
]
RULE_PACKS = {
    "index.yaml": "deploy/rule-packs/index.yaml",
    "default.yaml": "deploy/rule-packs/default.yaml",
    "tenants/acme-bank.yaml": "deploy/rule-packs/tenants/acme-bank.yaml",
}


def set_file(parent: str, name: str, path: str) -> list[str]:
    """--set-file for a key of a map whose keys are file names (their dots escaped)."""
    return ["--set-file", f"{parent}.{name.replace('.', chr(92) + '.')}={path}"]


PRODUCTION = [
    "-f",
    str(CHART / "examples" / "values-production.yaml"),
    *set_file("routing.policies", "default.yaml", "deploy/policies/default.yaml"),
    *[a for name, path in RULE_PACKS.items() for a in set_file("compliance.rulePacks", name, path)],
]
VALUE_SETS = {"default": MINIMAL, "production": PRODUCTION}
ALLOWED_APIS = {
    "v1",
    "apps/v1",
    "batch/v1",
    "policy/v1",
    "autoscaling/v2",
    "networking.k8s.io/v1",
    "monitoring.coreos.com/v1",
}
STATEFUL = {"sentiment", "audit-writer", "feedback-exporter", "review-console"}
SERVICES = {
    "transcription",
    "sentiment",
    "compliance-scoring",
    "review-router",
    "review-console",
    "audit-writer",
    "feedback-exporter",
}


def template(*args: str, check: bool = True) -> Any:
    return run(
        helm(), "template", "lw", str(CHART), "--namespace", "loopwise",
        "--kube-version", KUBE_VERSIONS[-1], *args, check=check,
    )  # fmt: skip


def render(*args: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(template(*args).stdout) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["name"].removeprefix("lw-loopwise-"): d for d in docs if d["kind"] == kind
    }


def workloads(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {**by_kind(docs, "Deployment"), **by_kind(docs, "StatefulSet")}


def env_of(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    container = workload["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e for e in container["env"]}


@pytest.fixture(scope="module")
def default_docs() -> list[dict[str, Any]]:
    return render(*MINIMAL)


@pytest.fixture(scope="module")
def production_docs() -> list[dict[str, Any]]:
    return render(*PRODUCTION)


@pytest.mark.parametrize("values", VALUE_SETS)
def test_lint_strict(values: str) -> None:
    out = run(helm(), "lint", "--strict", str(CHART), *VALUE_SETS[values]).stdout
    assert "0 chart(s) failed" in out, out


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("values", VALUE_SETS)
def test_rendered_chart_passes_the_strict_kubernetes_schemas(
    values: str, kube: str, tmp_path: Path
) -> None:
    rendered = tmp_path / f"{values}.yaml"
    rendered.write_text(
        run(
            helm(), "template", "lw", str(CHART), "--kube-version", kube, *VALUE_SETS[values]
        ).stdout
    )
    result = run(
        "uv", "run", "--no-sync", "kubernetes-validate", "--strict", "-k", kube, str(rendered),
        check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    passed = output.count(" passed for resource ")
    crds = [d for d in docs if d["apiVersion"] == "monitoring.coreos.com/v1"]
    assert passed == len(docs) - len(crds), output
    for line in output.splitlines():
        if line.startswith("WARN"):
            assert "monitoring.coreos.com/v1" in line, line  # only the operator's CRDs
    assert {d["apiVersion"] for d in docs} <= ALLOWED_APIS


def test_services_are_deployments_unless_they_keep_local_state(
    default_docs: list[dict[str, Any]], production_docs: list[dict[str, Any]]
) -> None:
    assert set(by_kind(default_docs, "StatefulSet")) == STATEFUL
    assert set(by_kind(default_docs, "Deployment")) == SERVICES - STATEFUL
    # PostgreSQL for the console: no local state left, so a Deployment; the audit writer
    # keeps its checkpoint files on its own volume whatever the database.
    assert set(by_kind(production_docs, "StatefulSet")) == STATEFUL - {"review-console"}
    for name, sts in by_kind(default_docs, "StatefulSet").items():
        claims = sts["spec"]["volumeClaimTemplates"]
        assert [c["metadata"]["name"] for c in claims] == ["state"], name
        mounts = sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        assert {"name": "state", "mountPath": "/var/lib/loopwise/state"} in mounts, name


@pytest.mark.parametrize("values", VALUE_SETS)
def test_every_pod_is_non_root_read_only_without_capabilities(values: str) -> None:
    docs = render(*VALUE_SETS[values])
    pods = [
        (d["metadata"]["name"], d["spec"]["template"]["spec"])
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet", "Job")
    ]
    assert len(pods) == len(SERVICES) + 1
    for name, pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert pod["automountServiceAccountToken"] is False, name
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], name
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"], name


def test_services_have_probes_service_pdb_and_network_policy(
    default_docs: list[dict[str, Any]],
) -> None:
    for name, w in workloads(default_docs).items():
        c = w["spec"]["template"]["spec"]["containers"][0]
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}, name
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}, name
        assert c["startupProbe"]["httpGet"]["path"] == "/healthz", name
        assert c["args"] == ["run"]
        assert c["image"] == f"loopwise/{name}:0.1.0"
        prefix = {"compliance-scoring": "COMPLIANCE", "review-router": "ROUTER",
                  "review-console": "CONSOLE", "audit-writer": "AUDIT",
                  "feedback-exporter": "FEEDBACK"}.get(name, name.upper())  # fmt: skip
        assert env_of(w)[f"LOOPWISE_{prefix}_OBSERVABILITY__PORT"]["value"] == "8080", name
    assert set(by_kind(default_docs, "Service")) == SERVICES
    assert set(by_kind(default_docs, "PodDisruptionBudget")) == SERVICES
    assert set(by_kind(default_docs, "NetworkPolicy")) == SERVICES
    assert by_kind(default_docs, "HorizontalPodAutoscaler") == {}
    console = by_kind(default_docs, "Service")["review-console"]
    assert {p["name"] for p in console["spec"]["ports"]} == {"metrics", "http"}
    # the console listens where its Service and probes say: on the pod's address, port http
    console_env = env_of(workloads(default_docs)["review-console"])
    container = workloads(default_docs)["review-console"]["spec"]["template"]["spec"]
    http = next(p for p in container["containers"][0]["ports"] if p["name"] == "http")
    assert console_env["LOOPWISE_CONSOLE_HTTP_PORT"]["value"] == str(http["containerPort"])
    assert console_env["LOOPWISE_CONSOLE_HTTP_HOST"]["value"] == "0.0.0.0"


def test_production_runs_three_replicas_on_sasl_ssl_and_postgresql(
    production_docs: list[dict[str, Any]],
) -> None:
    hpas = by_kind(production_docs, "HorizontalPodAutoscaler")
    assert set(hpas) == SERVICES - {"feedback-exporter"}
    for name, hpa in hpas.items():
        assert hpa["spec"]["minReplicas"] == 3, name
        assert hpa["spec"]["scaleTargetRef"]["kind"] == workloads(production_docs)[name]["kind"]
    assert workloads(production_docs)["feedback-exporter"]["spec"]["replicas"] == 1
    rendered = yaml.safe_dump_all(production_docs)
    for name, w in workloads(production_docs).items():
        env = env_of(w)
        assert env["KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
        assert env["KAFKA_SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
        for var, key in (("KAFKA_SASL_USERNAME", "username"), ("KAFKA_SASL_PASSWORD", "password")):
            assert env[var]["valueFrom"]["secretKeyRef"] == {"name": "loopwise-kafka", "key": key}
        assert env["KAFKA_SSL_CA_LOCATION"]["value"] == "/etc/loopwise/kafka-tls/ca.crt"
        volumes = {v["name"]: v for v in w["spec"]["template"]["spec"]["volumes"]}
        assert volumes["kafka-tls"]["secret"]["secretName"] == "loopwise-kafka-tls", name
    for name, secret in (
        ("audit-writer", "loopwise-audit-db"),
        ("review-console", "loopwise-console-db"),
    ):
        env = env_of(workloads(production_docs)[name])
        prefix = "LOOPWISE_AUDIT_" if name == "audit-writer" else "LOOPWISE_CONSOLE_"
        url = env[prefix + "DATABASE_URL"]
        assert url == {
            "name": prefix + "DATABASE_URL",
            "valueFrom": {"secretKeyRef": {"name": secret, "key": "url"}},
        }
    hmac = env_of(workloads(production_docs)["audit-writer"])["LOOPWISE_AUDIT_HMAC_KEY"]
    assert hmac["valueFrom"]["secretKeyRef"] == {"name": "loopwise-audit", "key": "hmac-key"}
    assert "sqlite" not in json.dumps(
        [env_of(workloads(production_docs)[n]) for n in ("audit-writer", "review-console")]
    )
    assert "postgresql" not in rendered  # URLs stay in the Secret


def test_policy_and_rule_pack_changes_roll_exactly_their_pods() -> None:
    base = PRODUCTION
    changed_policy = [
        *base,
        *set_file("routing.policies", "default.yaml", "deploy/rule-packs/index.yaml"),
    ]

    def annotations(args: list[str]) -> dict[str, dict[str, str]]:
        return {
            n: w["spec"]["template"]["metadata"].get("annotations") or {}
            for n, w in workloads(render(*args)).items()
        }

    before, after = annotations(base), annotations(changed_policy)
    assert (
        before["review-router"]["checksum/policies"] != after["review-router"]["checksum/policies"]
    )
    assert before["compliance-scoring"] == after["compliance-scoring"]
    assert {n for n in before if before[n] != after[n]} == {"review-router"}
    changed_pack = [
        *base,
        *set_file(
            "compliance.rulePacks", "tenants/acme-bank.yaml", "deploy/rule-packs/default.yaml"
        ),
    ]
    after = annotations(changed_pack)
    assert {n for n in before if before[n] != after[n]} == {"compliance-scoring"}


def test_rule_packs_keep_their_folders_and_content(production_docs: list[dict[str, Any]]) -> None:
    maps = by_kind(production_docs, "ConfigMap")
    packs = maps["rule-packs"]["data"]
    items = next(
        v
        for v in workloads(production_docs)["compliance-scoring"]["spec"]["template"]["spec"][
            "volumes"
        ]
        if v["name"] == "rule-packs"
    )["configMap"]["items"]
    assert {i["path"] for i in items} == set(RULE_PACKS)
    for item in items:
        assert packs[item["key"]] == (ROOT / RULE_PACKS[item["path"]]).read_text().rstrip("\n")
    assert maps["policies"]["data"]["default.yaml"] == (
        ROOT / "deploy/policies/default.yaml"
    ).read_text().rstrip("\n")
    router = env_of(workloads(production_docs)["review-router"])
    assert router["LOOPWISE_ROUTER_POLICY_PATH"]["value"] == "/etc/loopwise/policies/default.yaml"
    compliance = env_of(workloads(production_docs)["compliance-scoring"])
    assert (
        compliance["LOOPWISE_COMPLIANCE_RULE_PACKS"]["value"]
        == "/etc/loopwise/rule-packs/index.yaml"
    )


def test_topics_are_applied_by_a_pre_install_and_pre_upgrade_hook(
    production_docs: list[dict[str, Any]],
) -> None:
    job = by_kind(production_docs, "Job")["topics"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["loopwise", "topics", "apply"]
    env = {e["name"]: e for e in container["env"]}
    assert env["KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "loopwise-kafka"
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_monitoring_objects_carry_the_tested_rules_and_dashboard(
    default_docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    rule = next(d for d in default_docs if d["kind"] == "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())
    rendered_rules = tmp_path / "rules.yaml"
    rendered_rules.write_text(yaml.safe_dump(rule["spec"]))
    assert "SUCCESS" in run(promtool(), "check", "rules", str(rendered_rules)).stdout
    dashboard = next(
        d
        for d in default_docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")
    )
    assert json.loads(dashboard["data"]["loopwise-dashboard.json"]) == json.loads(
        DASHBOARD.read_text()
    )
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    monitor = next(d for d in default_docs if d["kind"] == "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/part-of": "loopwise", "app.kubernetes.io/instance": "lw"}  # fmt: skip
    # The alert rules match services by a job label containing "loopwise": the Service names.
    assert all(
        "loopwise" in name
        for name in (d["metadata"]["name"] for d in default_docs if d["kind"] == "Service")
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "audit.hmacKey.existingSecret=s"], "kafka.bootstrapServers is required"),
        (["--set", "kafka.bootstrapServers=k:9092"], "audit.hmacKey.existingSecret is required"),
        ([*MINIMAL, "--set", "kafka.securityProtocol=SASL_TLS"], "securityProtocol"),
        (
            [
                *MINIMAL,
                "--set",
                "kafka.securityProtocol=SASL_SSL",
                "--set",
                "kafka.saslMechanism=SCRAM-SHA-512",
            ],
            "existingSecret",
        ),
        ([*MINIMAL, "--set", "services.sentiment.replicas=many"], "replicas"),
        ([*MINIMAL, "--set", "services.sentiment.replica=2"], "replica"),
        ([*MINIMAL, "--set", "unknownTopLevel=1"], "unknownTopLevel"),
    ],
    ids=[
        "no-bootstrap",
        "no-hmac-secret",
        "bad-protocol",
        "sasl-without-secret",
        "wrong-type",
        "misspelt-key",
        "unknown-key",
    ],
)
def test_bad_values_fail_and_name_what_is_wrong(args: list[str], message: str) -> None:
    result = template(*args, check=False)
    assert result.returncode != 0, result.stdout[:2000]
    assert message in result.stderr, result.stderr
