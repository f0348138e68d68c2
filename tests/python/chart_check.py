"""Checks the Helm chart charts/ragmesh offline, with Helm's own engine.

For every value set in tests/fixtures/chart-values/ it runs `helm lint`
(strict), renders the chart with helm-python-sdk (Helm 4's library: no helm
binary), validates every rendered object against the Kubernetes JSON schemas
(kubernetes-validate, strict) or, for custom resources, against the CRD schemas
vendored in tests/fixtures/crds/, and asserts on the objects (chart_rules.py).
It also checks that values.schema.json and the templates refuse bad values
with a message naming the problem.

    chart_check.py [--out DIR]

--out DIR writes, per value set, DIR/<set>/gateway.toml (the gateway config
the ConfigMap holds), gateway-env.json (the gateway container's env; values
from Secrets the chart does not make are stood in), probes.json (component,
container port, probe path of every probe) and manifests.yaml, for
tests/tests/chart_e2e.rs to run the real binaries against. Exits 1 with a
report naming each failure; prints a summary of what it checked.
"""

import argparse
import collections
import copy
import json
import pathlib
import re
import tomllib

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

import chart_rules
from checks import Report

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "ragmesh"
VALUE_SETS = ROOT / "tests" / "fixtures" / "chart-values"
CRDS = ROOT / "tests" / "fixtures" / "crds"
KUBE_VERSION = "1.31.0"
RELEASE, NAMESPACE = "rag", "ragmesh"
# the value sets the issue names; more files in the folder are checked too
REQUIRED_SETS = {"defaults", "gpu-pools-keda", "external-qdrant", "all-off", "all-on"}


def binary_defaults():
    """The HTTP/gRPC port defaults as the binaries' clap attributes state them."""
    sources = {
        "gateway": "gateway/src/config.rs",
        "embedder": "embedder/src/server.rs",
        "retriever": "retriever/src/server.rs",
        "llm-runner": "llm-runner/src/server.rs",
    }
    out = {}
    for comp, rel in sources.items():
        text = (ROOT / rel).read_text()
        ports = {}
        for kind, env in (("http", "RAGMESH_HTTP_PORT"), ("grpc", "RAGMESH_GRPC_PORT")):
            m = re.search(rf'env = "{env}",\s*default_value_t = (\d+)', text)
            if m:
                ports[kind] = int(m.group(1))
        out[comp] = ports
    return out


def strict_schema(node):
    """The API server's strict field validation: unknown fields are errors."""
    if isinstance(node, dict):
        node = {k: strict_schema(v) for k, v in node.items()}
        if ("properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [strict_schema(v) for v in node]
    return node


def load_crds():
    """(apiVersion, kind) -> strict openAPIV3 schema of each vendored CRD version."""
    schemas = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            if not v.get("served"):
                continue
            schema = strict_schema(v["schema"]["openAPIV3Schema"])
            # a CRD's schema leaves apiVersion/kind/metadata loose; pin them
            schema["properties"]["apiVersion"] = {"const": f"{group}/{v['name']}"}
            schema["properties"]["kind"] = {"const": kind}
            schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
            schemas[(f"{group}/{v['name']}", kind)] = (schema, path.name)
    return schemas


def render(chart, values):
    """The rendered objects as [(template, object)], NOTES.txt left out."""
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = []
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append((template.split("/templates/", 1)[-1], doc))
    return manifests, objects


def validate(report, objects, crds, seen_kinds):
    for template, obj in objects:
        kind, api = obj.get("kind"), obj.get("apiVersion")
        name = f"{template}: {kind} {obj.get('metadata', {}).get('name')}"
        seen_kinds[f"{api} {kind}"] += 1
        if (api, kind) in crds:
            schema, source = crds[(api, kind)]
            errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(obj), key=lambda e: list(e.path))
            report.check(not errors, "CRD schema validation",
                         f"{name} against {source}: " + "; ".join(
                             f"{'.'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors[:5]))
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
            report.check(True, "Kubernetes schema validation (strict)")
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            report.check(False, "Kubernetes schema validation (strict)", f"{name}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            report.check(False, "Kubernetes schema validation (strict)", f"{name}: {e.message}")


def lint(report, set_name, values):
    result = helm.lint(str(CHART), values, strict=True, kube_version=f"v{KUBE_VERSION}")
    problems = [f"[{m['severity']}] {m['path']}: {m['error']}" for m in result.get("messages", [])
                if m.get("severity", 0) >= 2]
    problems += result.get("errors") or []
    report.check(not problems, "helm lint --strict", f"{set_name}: " + "; ".join(problems))


# Values the chart must refuse: (what, values, text the message must hold).
BAD_VALUES = [
    ("negative replica count", {"gateway": {"replicas": -1}},
     ["/gateway/replicas", "minimum"]),
    ("negative runner-pool replica count",
     {"runnerPools": [{"name": "a", "model": "SmolLM2-135M-Instruct.Q4_1.gguf", "replicas": -2}]},
     ["/runnerPools/0/replicas", "minimum"]),
    ("unknown runner-pool key",
     {"runnerPools": [{"name": "a", "model": "SmolLM2-135M-Instruct.Q4_1.gguf", "gpus": 1}]},
     ["/runnerPools/0", "'gpus' not allowed"]),
    ("unknown routing mode",
     {"runnerPools": [{"name": "a", "model": "SmolLM2-135M-Instruct.Q4_1.gguf", "routing": "random"}]},
     ["/runnerPools/0/routing"]),
    ("non-integer GPU count",
     {"runnerPools": [{"name": "a", "model": "SmolLM2-135M-Instruct.Q4_1.gguf", "gpu": 1.5}]},
     ["/runnerPools/0/gpu", "integer"]),
    ("GPU count as a string",
     {"runnerPools": [{"name": "a", "model": "SmolLM2-135M-Instruct.Q4_1.gguf", "gpu": "1"}]},
     ["/runnerPools/0/gpu", "integer"]),
    ("pool name that is not a DNS label",
     {"runnerPools": [{"name": "Big_Pool", "model": "SmolLM2-135M-Instruct.Q4_1.gguf"}]},
     ["/runnerPools/0/name"]),
    ("unknown autoscaling mode",
     {"runnerPools": [{"name": "a", "model": "SmolLM2-135M-Instruct.Q4_1.gguf",
                       "autoscaling": {"enabled": True, "mode": "magic"}}]},
     ["/runnerPools/0/autoscaling/mode"]),
    # refused by the templates (relations a schema cannot state)
    ("edge retriever with 2 replicas", {"retriever": {"replicas": 2}},
     ["retriever.replicas", "edge backend"]),
    ("HPA pool scaled to zero",
     {"runnerPools": [{"name": "a", "model": "SmolLM2-135M-Instruct.Q4_1.gguf",
                       "autoscaling": {"enabled": True, "mode": "hpa", "minReplicas": 0}}]},
     ["runnerPools[a].autoscaling", "needs mode keda"]),
    ("grace period shorter than the drain",
     {"drain": {"preStopSleepSeconds": 5, "shutdownGraceSeconds": 30, "terminationGracePeriodSeconds": 30}},
     ["terminationGracePeriodSeconds", "must exceed"]),
    ("pool model fetch-models.sh cannot fetch, no claim",
     {"runnerPools": [{"name": "big", "model": "other.gguf"}]},
     ["runnerPools[big]", "other.gguf", "modelsClaim"]),
    ("two pools with one name",
     {"runnerPools": [{"name": "a", "model": "SmolLM2-135M-Instruct.Q4_1.gguf"},
                      {"name": "a", "model": "SmolLM2-135M-Instruct.Q4_1.gguf"}]},
     ["used twice"]),
    ("external Qdrant without a URL", {"retriever": {"backend": "qdrant"}},
     ["retriever.qdrant.url"]),
]


def refusals(report, chart):
    for what, values, needles in BAD_VALUES:
        try:
            chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        except helm.HelmError as e:
            msg = str(e)
            report.check(all(n in msg for n in needles), "bad values refused with a clear message",
                         f"{what}: message lacks {needles}: {msg.strip()}")
            continue
        report.check(False, "bad values refused with a clear message", f"{what}: rendered without error")


def files_in_sync(report):
    """The chart ships the fetch script and its hashes as links to scripts/
    (Helm reads only files inside the chart, and follows links when it
    loads or packages one); what it reads must equal the project's."""
    for name in ("fetch-models.sh", "models.sha256"):
        same = (CHART / "files" / name).read_bytes() == (ROOT / "scripts" / name).read_bytes()
        report.check(same, "chart's files/ equal scripts/",
                     f"charts/ragmesh/files/{name} differs from scripts/{name}: link it again")


def scripts_shipped(report, set_name, objects):
    """The scripts ConfigMap carries the chart's files byte for byte (YAML
    block scalars can eat blank lines or indentation), and the Python ones
    compile."""
    cm = next(o for _, o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-scripts"))
    for key, path in (("fetch-models.sh", ROOT / "scripts" / "fetch-models.sh"),
                      ("ingest.py", CHART / "files" / "ingest.py"),
                      ("smoke_test.py", CHART / "files" / "smoke_test.py")):
        text = cm["data"].get(key)
        report.check(text == path.read_text(), "scripts ConfigMap holds the files unchanged",
                     f"{set_name}: {key} differs from {path}")
        if key.endswith(".py") and text:
            try:
                compile(text, key, "exec")
                report.check(True, "shipped Python scripts compile")
            except SyntaxError as e:
                report.check(False, "shipped Python scripts compile", f"{set_name}: {key}: {e}")


# Stand-ins for values of Secrets the chart does not make (existingSecret):
# the gateway checks that they are set, and RAGMESH_API_KEYS's form.
SECRET_STAND_INS = {"RAGMESH_API_KEYS": "chart-check=stand-in-key"}


def gateway_env(container, objects):
    """The gateway container's env as [[name, value]]: literal values as
    rendered, Secret-backed ones from the Secret the chart renders, or a
    stand-in; downward-API entries (pod name, ...) left out."""
    secrets = {o["metadata"]["name"]: o.get("stringData", {}) for _, o in objects if o["kind"] == "Secret"}
    env = []
    for e in container.get("env", []):
        if "value" in e:
            env.append([e["name"], e["value"]])
        elif "secretKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["secretKeyRef"]
            value = secrets.get(ref["name"], {}).get(ref["key"])
            env.append([e["name"], value if value is not None else SECRET_STAND_INS.get(e["name"], "stand-in")])
    return env


def write_outputs(out, set_name, objects, manifests):
    d = out / set_name
    d.mkdir(parents=True, exist_ok=True)
    cm = chart_rules.find(objects, "ConfigMap", component="gateway")
    (d / "gateway.toml").write_text(cm["data"]["gateway.toml"])
    gw = chart_rules.main_container(chart_rules.find(objects, "Deployment", component="gateway"))
    (d / "gateway-env.json").write_text(json.dumps(gateway_env(gw, objects), indent=1) + "\n")
    (d / "probes.json").write_text(json.dumps(chart_rules.probe_list(objects), indent=1) + "\n")
    (d / "manifests.yaml").write_text("".join(
        f"# Source: {k}\n{v}\n---\n" for k, v in sorted(manifests.items()) if not k.endswith("NOTES.txt")))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=pathlib.Path, help="write each value set's gateway.toml, env and probes here")
    args = ap.parse_args()

    report = Report()
    defaults = binary_defaults()
    report.check(all(len(p) == (1 if c == "gateway" else 2) for c, p in defaults.items()),
                 "binary port defaults found in the sources", str(defaults))
    crds = load_crds()
    files_in_sync(report)
    sets = sorted(VALUE_SETS.glob("*.yaml"))
    names = {p.stem for p in sets}
    report.check(REQUIRED_SETS <= names, "value sets present", f"missing {sorted(REQUIRED_SETS - names)}")
    kinds = collections.Counter()
    per_set = {}
    with helm.Chart.load(str(CHART)) as chart:
        report.check(chart.metadata.get("apiVersion") == "v2", "Chart.yaml apiVersion v2")
        report.check(chart.schema is not None, "values.schema.json present")
        for path in sets:
            values = yaml.safe_load(path.read_text()) or {}
            lint(report, path.stem, values)
            try:
                manifests, objects = render(chart, copy.deepcopy(values))
            except helm.HelmError as e:
                report.check(False, "renders", f"{path.stem}: {e}")
                continue
            report.check(True, "renders")
            per_set[path.stem] = len(objects)
            validate(report, objects, crds, kinds)
            scripts_shipped(report, path.stem, objects)
            merged = chart.merge_values(copy.deepcopy(values))
            chart_rules.check_all(report, path.stem, merged, objects, defaults, RELEASE, NAMESPACE)
            config = tomllib.loads(chart_rules.find(objects, "ConfigMap", component="gateway")["data"]["gateway.toml"])
            chart_rules.check_gateway_config(report, path.stem, merged, config, objects, NAMESPACE)
            if args.out:
                write_outputs(args.out, path.stem, objects, manifests)
        refusals(report, chart)

    print(f"chart_check: {CHART} with helm-python-sdk "
          f"(Helm {helm.helm_sdk_version()}), Kubernetes schemas v{KUBE_VERSION} strict")
    for name, n in sorted(per_set.items()):
        print(f"  value set {name}: {n} objects")
    print("  kinds rendered: " + ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items())))
    report.finish("chart_check")


if __name__ == "__main__":
    main()
