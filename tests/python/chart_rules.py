"""Assertions on the objects the ragmesh chart renders (used by chart_check.py).

Each rule takes the Report, the value set's name, the merged values and the
rendered [(template, object)] list, and records one check per thing it
looked at, so the summary says how much was checked.
"""

import urllib.parse

BINARIES = {"gateway", "embedder", "retriever", "llm-runner"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job", "Pod"}
GPU = "nvidia.com/gpu"
STD_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
              "app.kubernetes.io/managed-by")
COMPONENT = "app.kubernetes.io/component"
POOL = "ragmesh.io/pool"


def meta(obj):
    return obj.get("metadata", {})


def labels(obj):
    return meta(obj).get("labels") or {}


def name(obj):
    return f"{obj['kind']} {meta(obj).get('name')}"


def find(objects, kind, component=None):
    for _, o in objects:
        if o["kind"] == kind and (component is None or labels(o).get(COMPONENT) == component):
            return o
    raise LookupError(f"no {kind} of component {component}")


def pod_template(obj):
    """(labels, pod spec) of a workload."""
    if obj["kind"] == "Pod":
        return labels(obj), obj["spec"]
    t = obj["spec"]["template"]
    return t.get("metadata", {}).get("labels") or {}, t["spec"]


def workloads(objects):
    return [o for _, o in objects if o["kind"] in WORKLOAD_KINDS]


def main_container(obj):
    """The container running a ragmesh binary (named after its component)."""
    _, spec = pod_template(obj)
    comp = labels(obj).get(COMPONENT)
    return next(c for c in spec["containers"] if c["name"] == comp)


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def port_of(container, port):
    """A probe's port (a name or a number) as a number, or None."""
    if isinstance(port, int):
        return port
    return next((p["containerPort"] for p in container.get("ports", []) if p.get("name") == port), None)


def matches(selector, lbls):
    """A label selector (matchLabels / matchExpressions, or a plain map) against labels."""
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    for k, v in (selector.get("matchLabels") or {}).items():
        if lbls.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        have = e["key"] in lbls
        if e["operator"] == "In" and (not have or lbls[e["key"]] not in e["values"]):
            return False
        if e["operator"] == "NotIn" and have and lbls[e["key"]] in e["values"]:
            return False
        if e["operator"] == "Exists" and not have:
            return False
        if e["operator"] == "DoesNotExist" and have:
            return False
    return True


def pool_values(values, pool):
    return next(p for p in values["runnerPools"] if p["name"] == pool)


def check_all(report, set_name, values, objects, defaults, release, namespace):
    for rule in (check_labels, check_gpus, check_selectors, check_ports, check_security, check_probes,
                 check_drain, check_autoscaling, check_models, check_network_policies, check_otel,
                 check_jobs):
        rule(report, set_name, values, objects, defaults)


def check_labels(report, s, values, objects, defaults):
    for template, o in objects:
        missing = [k for k in STD_LABELS if k not in labels(o)]
        report.check(not missing, "standard labels on every object", f"{s}: {name(o)} lacks {missing}")
        if o["kind"] in WORKLOAD_KINDS:
            lbls, _ = pod_template(o)
            report.check(all(k in lbls for k in STD_LABELS + (COMPONENT,)), "standard labels on every pod",
                         f"{s}: {name(o)} pod labels {lbls}")


def expected_gpus(values, o):
    comp = labels(o).get(COMPONENT)
    if comp == "llm-runner":
        return int(pool_values(values, labels(o)[POOL]).get("gpu", 0))
    if comp == "embedder":
        return int(values["embedder"].get("gpu", 0))
    return 0


def check_gpus(report, s, values, objects, defaults):
    """nvidia.com/gpu in requests and limits exactly when the values ask, as a whole number."""
    for o in workloads(objects):
        _, spec = pod_template(o)
        want = expected_gpus(values, o)
        for c in spec.get("initContainers", []) + spec["containers"]:
            res = c.get("resources") or {}
            req, lim = (res.get("requests") or {}).get(GPU), (res.get("limits") or {}).get(GPU)
            is_main = c["name"] == labels(o).get(COMPONENT)
            expect = want if is_main and want > 0 else None
            report.check(req == expect and lim == expect, "GPUs requested only when asked",
                         f"{s}: {name(o)} container {c['name']}: requests {req}, limits {lim}, want {expect}")


def check_selectors(report, s, values, objects, defaults):
    """Every Service / PDB / workload selector picks exactly its component's (and pool's) pods."""
    pods = [(o, pod_template(o)[0]) for o in workloads(objects)]
    for o, lbls in pods:
        if o["kind"] in ("Deployment", "StatefulSet"):
            sel = o["spec"]["selector"]
            picked = [w for w, pl in pods if matches(sel, pl)]
            report.check(picked == [o], "workload selectors pick only their own pods",
                         f"{s}: {name(o)} selector {sel} picks {[name(w) for w in picked]}")
    for _, o in objects:
        if o["kind"] == "Service":
            sel = o["spec"]["selector"]
        elif o["kind"] == "PodDisruptionBudget":
            sel = o["spec"]["selector"]
        else:
            continue
        comp, pool = labels(o).get(COMPONENT), labels(o).get(POOL)
        picked = [w for w, pl in pods if matches(sel, pl)]
        ok = (len(picked) == 1 and labels(picked[0]).get(COMPONENT) == comp
              and pod_template(picked[0])[0].get(POOL) == pool
              and COMPONENT in (sel.get("matchLabels") or sel) and (pool is None or POOL in (sel.get("matchLabels") or sel)))
        report.check(ok, "Service and PDB selectors pick exactly their component's pods",
                     f"{s}: {name(o)} ({comp}/{pool}) selector {sel} picks {[name(w) for w in picked]}")
        if o["kind"] == "Service" and len(picked) == 1:
            c = main_container(picked[0])
            for p in o["spec"]["ports"]:
                report.check(port_of(c, p.get("targetPort", p["port"])) is not None,
                             "Service ports reach a container port",
                             f"{s}: {name(o)} port {p} has no container port in {name(picked[0])}")
            headless = o["spec"].get("clusterIP") == "None"
            report.check(headless == (comp != "gateway"), "leaf Services headless, gateway Service ClusterIP",
                         f"{s}: {name(o)} clusterIP {o['spec'].get('clusterIP')}")


def check_ports(report, s, values, objects, defaults):
    """Container ports equal the env the binary reads and the binaries' own defaults."""
    configured = {
        "gateway": {"http": values["gateway"]["port"]},
        "embedder": {"http": values["embedder"]["httpPort"], "grpc": values["embedder"]["grpcPort"]},
        "retriever": {"http": values["retriever"]["httpPort"], "grpc": values["retriever"]["grpcPort"]},
        "llm-runner": {"http": values["runner"]["httpPort"], "grpc": values["runner"]["grpcPort"]},
    }
    for o in workloads(objects):
        comp = labels(o).get(COMPONENT)
        if comp not in BINARIES:
            continue
        c = main_container(o)
        env = env_of(c)
        report.check(c.get("command") == [f"ragmesh-{comp}"], "each workload runs its binary",
                     f"{s}: {name(o)} command {c.get('command')}")
        report.check(env.get("RAGMESH_HOST") == "0.0.0.0", "binaries listen on 0.0.0.0", f"{s}: {name(o)}")
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        report.check(set(ports) == set(defaults[comp]), "container ports are the binary's (http, grpc)",
                     f"{s}: {name(o)} ports {ports}, binary has {defaults[comp]}")
        for kind, want in defaults[comp].items():
            envname = "RAGMESH_HTTP_PORT" if kind == "http" else "RAGMESH_GRPC_PORT"
            report.check(str(ports.get(kind)) == env.get(envname), "container port equals the env the binary reads",
                         f"{s}: {name(o)} {kind} port {ports.get(kind)} but {envname}={env.get(envname)}")
            if int(configured[comp][kind]) == want:
                report.check(ports.get(kind) == want, "ports agree with the binaries' defaults",
                             f"{s}: {name(o)} {kind} {ports.get(kind)}, binary default {want}")


def effective(pod_sc, c_sc, key):
    return c_sc[key] if key in c_sc else pod_sc.get(key)


def check_security(report, s, values, objects, defaults):
    """No container runs as root or can gain privileges; root FS read-only."""
    for o in workloads(objects):
        _, spec = pod_template(o)
        psc = spec.get("securityContext") or {}
        report.check(not (spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC")),
                     "no host namespaces", f"{s}: {name(o)}")
        for c in spec.get("initContainers", []) + spec["containers"]:
            csc = c.get("securityContext") or {}
            uid = effective(psc, csc, "runAsUser")
            seccomp = (effective(psc, csc, "seccompProfile") or {}).get("type")
            problems = []
            if effective(psc, csc, "runAsNonRoot") is not True:
                problems.append("runAsNonRoot not true")
            if uid in (None, 0):
                problems.append(f"runAsUser {uid}")
            if csc.get("allowPrivilegeEscalation") is not False:
                problems.append("allowPrivilegeEscalation not false")
            if csc.get("readOnlyRootFilesystem") is not True:
                problems.append("root filesystem writable")
            if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
                problems.append("capabilities not dropped")
            if csc.get("privileged"):
                problems.append("privileged")
            if seccomp != "RuntimeDefault":
                problems.append(f"seccomp {seccomp}")
            report.check(not problems, "no container runs as root (restricted securityContext)",
                         f"{s}: {name(o)} container {c['name']}: {', '.join(problems)}")


def probe_list(objects):
    """[{component, pool, container, probe, port, path}] for every probe of every binary."""
    out = []
    for o in workloads(objects):
        comp = labels(o).get(COMPONENT)
        if comp not in BINARIES:
            continue
        c = main_container(o)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            h = (c.get(probe) or {}).get("httpGet")
            if h:
                out.append({"component": comp, "pool": labels(o).get(POOL), "container": c["name"],
                            "probe": probe, "port": port_of(c, h["port"]), "path": h["path"]})
    return out


def check_probes(report, s, values, objects, defaults):
    """startup and readiness on /ready, liveness on /health, all on the binary's HTTP port."""
    want = {"startupProbe": "/ready", "readinessProbe": "/ready", "livenessProbe": "/health"}
    for o in workloads(objects):
        comp = labels(o).get(COMPONENT)
        if comp not in BINARIES:
            continue
        c = main_container(o)
        http = int(env_of(c)["RAGMESH_HTTP_PORT"])
        for probe, path in want.items():
            h = (c.get(probe) or {}).get("httpGet") or {}
            report.check(h.get("path") == path and port_of(c, h.get("port")) == http,
                         "probes use the right path and HTTP port",
                         f"{s}: {name(o)} {probe} {h}, want {path} on {http}")
        sp = c.get("startupProbe") or {}
        budget = sp.get("periodSeconds", 10) * sp.get("failureThreshold", 3)
        report.check(budget >= 120, "startupProbe allows for model loading (>= 120 s)",
                     f"{s}: {name(o)} startup budget {budget}s")
        _, spec = pod_template(o)
        for ic in spec.get("initContainers", []):
            report.check(not any(k in ic for k in want), "init containers have no probes", f"{s}: {name(o)}")


def check_drain(report, s, values, objects, defaults):
    """preStop sleeps (no shell in the image) and the grace period outlasts sleep + drain."""
    for o in workloads(objects):
        comp = labels(o).get(COMPONENT)
        if comp not in BINARIES:
            continue
        c = main_container(o)
        pre = (c.get("lifecycle") or {}).get("preStop") or {}
        sleep = (pre.get("sleep") or {}).get("seconds")
        report.check(set(pre) == {"sleep"} and sleep and sleep > 0, "preStop is a native sleep",
                     f"{s}: {name(o)} preStop {pre}")
        grace = int(env_of(c).get("RAGMESH_SHUTDOWN_GRACE_S") or -1)
        tgps = pod_template(o)[1].get("terminationGracePeriodSeconds", 30)
        report.check(grace >= 0 and tgps > (sleep or 0) + grace, "terminationGracePeriodSeconds > preStop + shutdown grace",
                     f"{s}: {name(o)} {tgps} <= {sleep} + {grace}")


def check_autoscaling(report, s, values, objects, defaults):
    deployments = {meta(o)["name"]: o for _, o in objects if o["kind"] == "Deployment"}
    for _, o in objects:
        if o["kind"] == "HorizontalPodAutoscaler":
            target = o["spec"]["scaleTargetRef"]["name"]
            minimum = o["spec"].get("minReplicas", 1)
            report.check(minimum >= 1, "HPAs keep at least one replica", f"{s}: {name(o)} minReplicas {minimum}")
        elif o["kind"] == "ScaledObject":
            target = o["spec"]["scaleTargetRef"]["name"]
            trig = o["spec"]["triggers"][0]
            report.check(trig["type"] == "prometheus" and values["runner"]["waitingMetric"] in trig["metadata"]["query"],
                         "KEDA scales runner pools on the waiting-requests gauge", f"{s}: {name(o)} {trig}")
        else:
            continue
        d = deployments.get(target)
        report.check(d is not None, "autoscalers target a rendered Deployment", f"{s}: {name(o)} -> {target}")
        if d is not None:
            report.check("replicas" not in d["spec"], "autoscaled Deployments leave replicas to the autoscaler",
                         f"{s}: {name(d)} sets replicas {d['spec'].get('replicas')}")
            if labels(d).get(COMPONENT) == "llm-runner" and o["kind"] == "HorizontalPodAutoscaler":
                m = o["spec"]["metrics"][0]
                report.check(m["type"] == "External" and m["external"]["metric"]["name"] == values["runner"]["waitingMetric"],
                             "HPA runner pools scale on the waiting-requests gauge", f"{s}: {name(o)} {m}")
    for p in values["runnerPools"]:
        a = p.get("autoscaling") or {}
        if a.get("enabled"):
            kind = "ScaledObject" if a.get("mode", "keda") == "keda" else "HorizontalPodAutoscaler"
            has = any(o["kind"] == kind and labels(o).get(POOL) == p["name"] for _, o in objects)
            report.check(has, "each autoscaled pool gets the autoscaler its mode names", f"{s}: pool {p['name']} lacks {kind}")


def check_models(report, s, values, objects, defaults):
    """The model files each binary loads come from the models volume, fetched or claimed."""
    scripts = next((o for _, o in objects if o["kind"] == "ConfigMap" and meta(o)["name"].endswith("-scripts")), None)
    for o in workloads(objects):
        comp = labels(o).get(COMPONENT)
        if comp not in ("embedder", "llm-runner"):
            continue
        _, spec = pod_template(o)
        vols = {v["name"]: v for v in spec["volumes"]}
        c = main_container(o)
        mount = next((m for m in c["volumeMounts"] if m["name"] == "models"), None)
        report.check(mount and mount.get("readOnly") and mount["mountPath"] == values["models"]["dir"],
                     "models mounted read-only at models.dir", f"{s}: {name(o)} {mount}")
        inits = spec.get("initContainers", [])
        if inits:
            items = vols["fetch-script"]["configMap"]["items"]
            sums_key = next(i["key"] for i in items if i["path"] == "models.sha256")
            sums = (scripts or {}).get("data", {}).get(sums_key, "")
            if comp == "llm-runner":
                model = env_of(c)["RAGMESH_LLM_MODEL"].rsplit("/", 1)[-1]
                ok = any(line.endswith("  " + model) for line in sums.splitlines())
            else:
                ok = all(line.split("  ")[1].startswith(env_of(c)["RAGMESH_EMBED_MODEL"] + "/")
                         for line in sums.splitlines() if line.strip()) and sums.strip()
            report.check(ok, "the fetch init container fetches exactly the files the binary loads",
                         f"{s}: {name(o)} sums {sums_key}: {sums!r}")
        else:
            claim = vols["models"].get("persistentVolumeClaim")
            report.check(claim is not None, "without a fetch the models come from a claim", f"{s}: {name(o)} {vols['models']}")


def check_network_policies(report, s, values, objects, defaults):
    pols = [o for _, o in objects if o["kind"] == "NetworkPolicy"]
    if not values["networkPolicy"]["enabled"]:
        report.check(not pols, "no NetworkPolicies when disabled", s)
        return
    gw_sel = {"podSelector": {"matchLabels": find(objects, "Deployment", "gateway")["spec"]["selector"]["matchLabels"]}}
    grpc = {"embedder": values["embedder"]["grpcPort"], "retriever": values["retriever"]["grpcPort"],
            "llm-runner": values["runner"]["grpcPort"]}
    qport = None
    if values["retriever"]["backend"] == "qdrant":
        qport = urllib.parse.urlsplit(values["retriever"]["qdrant"]["url"]).port or 6334
        qpods = values["retriever"]["qdrant"].get("podSelector")
        if qpods:
            retr = find(objects, "StatefulSet", "retriever")["spec"]["selector"]["matchLabels"]
            pol = next((p for p in pols if p["spec"]["podSelector"].get("matchLabels") == qpods), None)
            rules = (pol or {}).get("spec", {}).get("ingress", [])
            to_port = [r for r in rules if any(pt.get("port") == qport for pt in r.get("ports", []))]
            report.check(pol is not None and [r.get("from") for r in to_port] == [[{"podSelector": {"matchLabels": retr}}]],
                         "only the retriever reaches Qdrant's pods", f"{s}: {pol}")
    for comp in BINARIES:
        pol = next((p for p in pols if labels(p).get(COMPONENT) == comp
                    and p["spec"]["podSelector"]["matchLabels"].get(COMPONENT) == comp), None)
        if not report.check(pol is not None, "a NetworkPolicy per component", f"{s}: none for {comp}"):
            continue
        report.check(set(pol["spec"]["policyTypes"]) == {"Ingress", "Egress"}, "policies restrict both ways", f"{s}: {name(pol)}")
        egress = pol["spec"].get("egress", [])
        report.check(any(any(p.get("port") == 53 for p in r.get("ports", [])) for r in egress),
                     "DNS egress allowed", f"{s}: {name(pol)}")
        to_qdrant = any(any(p.get("port") == qport for p in r.get("ports", [])) for r in egress) if qport else False
        report.check(to_qdrant == (comp == "retriever" and qport is not None), "only the retriever reaches Qdrant",
                     f"{s}: {name(pol)} egress to {qport}: {to_qdrant}")
        if comp in grpc:
            for rule in pol["spec"].get("ingress", []):
                opens_grpc = any(p.get("port") == grpc[comp] for p in rule.get("ports", []))
                if opens_grpc:
                    report.check(rule.get("from") == [gw_sel], "only the gateway reaches the leaf services",
                                 f"{s}: {name(pol)} rule {rule}")


def check_otel(report, s, values, objects, defaults):
    on = values["otel"]["enabled"]
    for o in workloads(objects):
        comp = labels(o).get(COMPONENT)
        if comp not in BINARIES:
            continue
        env = env_of(main_container(o))
        if on:
            ok = (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") == values["otel"]["endpoint"]
                  and env.get("OTEL_SERVICE_NAME") == f"ragmesh-{comp}"
                  and f"ragmesh.component={comp}" in (env.get("OTEL_RESOURCE_ATTRIBUTES") or ""))
        else:
            ok = not any(k.startswith("OTEL_") for k in env)
        report.check(ok, "OTel env wired exactly when enabled", f"{s}: {name(o)} {env}")


def check_jobs(report, s, values, objects, defaults):
    jobs = [o for _, o in objects if o["kind"] == "Job"]
    report.check(bool(jobs) == bool(values["ingest"]["enabled"]), "ingest Job exactly when enabled", s)
    for j in jobs:
        queue = values["ingest"].get("kueueQueueName")
        got = labels(j).get("kueue.x-k8s.io/queue-name")
        report.check(got == (queue or None) and bool(j["spec"].get("suspend")) == bool(queue),
                     "ingest Job carries the Kueue queue label when set", f"{s}: {name(j)} {got}")
        c = pod_template(j)[1]["containers"][0]
        url = env_of(c)["GATEWAY_URL"]
        svc = find(objects, "Service", "gateway")
        report.check(url.startswith(f"http://{meta(svc)['name']}.") and url.endswith(f":{svc['spec']['ports'][0]['port']}"),
                     "ingest Job calls the gateway Service", f"{s}: {url}")
    tests = [o for _, o in objects if o["kind"] == "Pod"]
    report.check(len(tests) == (1 if values["tests"]["enabled"] else 0), "helm test Pod exactly when enabled", s)
    for t in tests:
        report.check(meta(t).get("annotations", {}).get("helm.sh/hook") == "test", "test Pod is a helm test hook", s)


def dns_target(objects, svc_name, port_name, namespace):
    svc = next(o for _, o in objects if o["kind"] == "Service" and meta(o)["name"] == svc_name)
    port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == port_name)
    return f"dns://{svc_name}.{namespace}.svc.cluster.local:{port}"


def number(v):
    """Helm reads numbers as floats; the config must hold whole ones as integers."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, dict):
        return {k: number(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [number(x) for x in v]
    return v


def check_gateway_config(report, s, values, config, objects, namespace):
    """The rendered TOML: one [[model]] per pool at its headless Service's gRPC port, the
    upstreams, profiles, keys and aliases as given, whole numbers as TOML integers."""
    models = config.get("model", [])
    pools = values["runnerPools"]
    for p in pools:
        svc = next((o for _, o in objects if o["kind"] == "Service" and labels(o).get(POOL) == p["name"]), None)
        if not report.check(svc is not None, "each pool has a Service", f"{s}: {p['name']}"):
            continue
        want = dns_target(objects, meta(svc)["name"], "grpc", namespace)
        served = p.get("servedModelName") or p["model"].rsplit("/", 1)[-1].removesuffix(".gguf")
        m = next((m for m in models if m.get("name") == served), None)
        report.check(m is not None and m.get("runners") == [want], "gateway [[model]] per pool at its headless Service",
                     f"{s}: pool {p['name']}: {m}, want runners [{want}]")
        # a pool that may scale to zero must not hold up the gateway's start,
        # and requests for it wait (counted) while KEDA wakes it
        a = p.get("autoscaling") or {}
        to_zero = bool(a.get("enabled")) and a.get("mode", "keda") == "keda" and int(a.get("minReplicas", 1)) < 1
        wait = (m or {}).get("scale_from_zero_wait_s")
        report.check((wait == values["runner"]["scaleFromZeroWaitSeconds"]) if to_zero else wait is None,
                     "pools that scale to zero are standby models of the gateway (only they)",
                     f"{s}: pool {p['name']}: to_zero={to_zero} scale_from_zero_wait_s={wait}")
        report.check((m or {}).get("routing") == p.get("routing"), "a pool's routing mode reaches its [[model]]",
                     f"{s}: pool {p['name']}: {(m or {}).get('routing')} for {p.get('routing')}")
        if to_zero:
            so = next((o for _, o in objects if o["kind"] == "ScaledObject" and labels(o).get(POOL) == p["name"]), None)
            wake = [t for t in (so or {}).get("spec", {}).get("triggers", [])
                    if values["runner"]["gatewayWaitingMetric"] in t.get("metadata", {}).get("query", "")
                    and f'model="{served}"' in t["metadata"]["query"]]
            report.check(len(wake) == 1, "a pool at zero wakes on the gateway's waiting requests for its model",
                         f"{s}: pool {p['name']}: {so and so['spec']['triggers']}")
    ups = values["gateway"]["config"]["upstreams"]
    report.check(len(models) == len(pools) + len(ups), "gateway [[model]] count = pools + upstreams",
                 f"{s}: {len(models)} models")
    gw = main_container(find(objects, "Deployment", "gateway"))
    secret_env = {e["name"] for e in gw.get("env", []) if "valueFrom" in e}
    for u in ups:
        m = next((m for m in models if m.get("name") == u["name"]), {})
        targets = m.get("upstream", [])
        report.check([t["url"] for t in targets] == [t["url"] for t in u["targets"]], "upstream targets in order",
                     f"{s}: {u['name']}: {targets}")
        for t, given in zip(targets, u["targets"]):
            if given.get("apiKeySecret"):
                report.check(t.get("api_key_env") in secret_env, "upstream keys come from a Secret env",
                             f"{s}: {u['name']} api_key_env {t.get('api_key_env')} not in {sorted(secret_env)}")
    want_profiles = number(values["gateway"]["config"]["profiles"])
    report.check(config.get("profile", []) == want_profiles, "profiles rendered as given (integers stay integers)",
                 f"{s}: {config.get('profile')} != {want_profiles}")
    report.check(config.get("aliases", {}) == values["gateway"]["config"]["aliases"], "aliases rendered as given", s)
    report.check(config.get("key", []) == number(values["gateway"]["auth"]["hashedKeys"]), "hashed keys rendered as given", s)
    env = env_of(gw)
    report.check(env.get("RAGMESH_LLM_MODEL") == "none", "gateway runs no in-process model", f"{s}: {env.get('RAGMESH_LLM_MODEL')}")
    for stage, comp in (("EMBEDDER", "embedder"), ("RETRIEVER", "retriever")):
        svc = find(objects, "Service", comp)
        want = dns_target(objects, meta(svc)["name"], "grpc", namespace)
        report.check(env.get(f"RAGMESH_{stage}_ENDPOINTS") == want, "gateway reaches each stage at its headless Service",
                     f"{s}: RAGMESH_{stage}_ENDPOINTS={env.get(f'RAGMESH_{stage}_ENDPOINTS')}, want {want}")
    mount = next(m for m in gw["volumeMounts"] if m["name"] == "config")
    report.check(env.get("RAGMESH_CONFIG") == mount["mountPath"] + "/gateway.toml", "RAGMESH_CONFIG is the mounted ConfigMap",
                 f"{s}: {env.get('RAGMESH_CONFIG')}")
