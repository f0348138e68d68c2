"""The ragmesh mesh in containers, end to end, on this machine's Docker Engine.

    container_check.py --bin-dir DIR [--model-dir DIR] [--keep-image]

1. Builds the image as CI does, from the binaries in --bin-dir (no cargo):
   scripts/base-image.sh (the local Debian base; idempotent), then
   scripts/image.sh --bin-dir DIR --tag ragmesh:test-e2e. Each step is timed.
2. Starts compose.yaml as project ragmesh-e2e-<pid> with that image, the
   models of --model-dir, an empty demo folder (a fast start), the gateway on
   a free 127.0.0.1 port, a 20 s drain grace (Docker's stop grace 25 s) and a
   1 s DNS re-resolution / 200 ms probe period in the gateway.
   `docker-compose down -v` at the end, also on failure.
3. Asserts every container runs as the Helm chart runs it: uid/gid 10001
   (Config.User and `docker top`), read-only root filesystem, all
   capabilities dropped, no-new-privileges, models mounted read-only, and
   configured by environment variables only (the command is the bare binary
   name: no flags).
4. Waits for the gateway's /ready, creates a collection, ingests three
   documents of invented facts and asks two questions through the gateway
   container (temperature 0, a `rag` object): each answer states its fact
   and its first citation names the right document (JSON and SSE).
5. Rolling restart: WORKERS concurrent streaming chats (ignore_eos,
   temperature 0) run while runner-a gets `docker stop` (SIGTERM) with
   streams in flight on it: every stream completes (finish_reason chunk,
   then [DONE], no error event), runner-a logs its drain, exits 0 within
   the grace period without reaching the deadline, and every request sent
   meanwhile succeeds on runner-b (runner-b's generated-token counter grew
   by at least the tokens of the streams started after the SIGTERM).
   `docker start` runner-a again: the gateway (same container, same
   process) sends it calls again (its fresh token counter rises).
6. `docker kill` (SIGKILL) runner-a while it streams (WORKERS long streams,
   so each request on runner-a is past its first token). Which stream is on
   which runner is not visible to a client, so the assertion is: every
   stream either completed normally or, having received tokens, ended with
   an SSE `data: {"error": {message, type, param, code}}` event directly
   followed by `data: [DONE]` (never a cut JSON line, an HTTP error, a
   dropped connection or a hang); at least one ended with the error event,
   and only streams in flight at the kill did; another stream in flight
   completed; every stream started after the kill succeeded (runner-b's
   token counter again). runner-a is started again and rejoins.
7. `docker kill` runner-a while it reads a long prompt (it has taken the
   request, generated no token, sent nothing): the gateway's pool retries
   the request on runner-b, so the client sees a normal stream (README:
   "retried before the first byte"). runner-a is started again and rejoins.

The runners' own /metrics (port 8083) are read from the host at their
container IPs: the `mesh` network is `internal: true`, but Docker's isolation
rules filter only forwarded traffic, and the host owns the bridge's gateway
address, so the host reaches the containers (checked first, with a clear
failure where it does not, e.g. Docker Desktop).

A run killed before its teardown leaves its project behind: the next run
removes every ragmesh-e2e-<pid> project whose process is gone.

Prints a report with timings and, per phase, requests sent, succeeded and
failed (with why); exits 1 on any failure. The whole run is bounded: it
stops itself after RAGMESH_E2E_BUDGET_S seconds (default 360; then tears
down) and every wait has a limit. Needs Docker Engine, docker-compose 1.27+
(or `docker compose`), root (scripts/base-image.sh runs debootstrap when the
base is missing) and httpx.
"""

import argparse
import collections
import datetime
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import httpx

import checks

ROOT = pathlib.Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
TAG = "ragmesh:test-e2e"
PROJECT_PREFIX = "ragmesh-e2e-"
MODEL = "SmolLM2-135M-Instruct.Q4_1"
UID = "10001"
GRACE_S = 20  # RAGMESH_SHUTDOWN_GRACE_S: the binaries' drain deadline
STOP_GRACE_S = 25  # Docker's wait before SIGKILL (a few seconds above)
WORKERS = 4  # long streams at once, plus one worker of short ones
STOP_TOKENS = 128  # streams of the rolling restart (~1-3 s each here)
KILL_TOKENS = 256  # longer, so the killed runner is surely mid-stream
SHORT_TOKENS = 16  # the short streams: requests keep arriving during a drain
# the whole run, image build included; the teardown comes after
BUDGET_S = int(os.environ.get("RAGMESH_E2E_BUDGET_S", "360"))
PROMPT = "Write a long story about a lighthouse."
# ~1500 tokens: reading it takes seconds on the debug runner, a window to kill in
LONG_PROMPT = " ".join(f"Note {i}: the lighthouse keeper saw a ship near the rocks." for i in range(100)) \
    + " Summarise the notes."

SERVICES = {
    "embedder": "ragmesh-embedder",
    "retriever": "ragmesh-retriever",
    "runner-a": "ragmesh-llm-runner",
    "runner-b": "ragmesh-llm-runner",
    "gateway": "ragmesh-gateway",
}
MODEL_MOUNTS = {"embedder", "runner-a", "runner-b"}

DOCS = [
    {"id": "zorblax.md",
     "text": "# Zorblax reactor\n\nThe Zorblax reactor on Kepler station runs at exactly 742 kelvin.",
     "metadata": {"topic": "energy"}},
    {"id": "quillon.txt",
     "text": "The Quillon library in Dunmore opens at nine in the morning on Tuesdays.",
     "metadata": {"topic": "places"}},
    {"id": "brambleton.md",
     "text": "# Brambleton ferry\n\nThe Brambleton ferry carries exactly 318 passengers across Lake Ostrava.",
     "metadata": {"topic": "transport"}},
]
QUESTIONS = [
    ("At what temperature does the Zorblax reactor run?", "zorblax.md", "742"),
    ("How many passengers does the Brambleton ferry carry?", "brambleton.md", "318"),
]


class Failed(Exception):
    """A check whose failure makes the following steps meaningless."""


class OutOfTime(Exception):
    pass


class Report(checks.Report):
    """Checks, counts and timings, each check printed as it happens."""

    def __init__(self):
        super().__init__()
        self.timings = []
        self.t0 = time.monotonic()

    def check(self, ok, what, detail=""):
        mark = "ok  " if ok else "FAIL"
        # a passing check shows a short detail only (logs and such: on failure)
        shown = detail if not ok or len(str(detail)) <= 160 else ""
        print(f"  [{mark}] {what}" + (f": {shown}" if shown else ""), flush=True)
        return super().check(ok, what, detail)

    def require(self, ok, what, detail=""):
        if not self.check(ok, what, detail):
            raise Failed(what)

    def info(self, line):
        print(f"         {line}", flush=True)

    def section(self, title):
        print(f"\n== {title}  (t+{time.monotonic() - self.t0:.1f} s)", flush=True)

    def timed(self, what, seconds):
        self.timings.append((what, seconds))
        print(f"  [time] {what}: {seconds:.1f} s", flush=True)


# --- processes ---------------------------------------------------------------

def run(cmd, timeout, env=None, check=True, capture=True):
    """Runs `cmd` in its own process group, killed whole on timeout (or when
    the run's budget interrupts it). Returns (rc, stdout, stderr)."""
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, text=True, start_new_session=True,
                         stdout=subprocess.PIPE if capture else None,
                         stderr=subprocess.PIPE if capture else None)
    try:
        out, err = p.communicate(timeout=timeout)
    except BaseException:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.communicate()
        raise
    if check and p.returncode != 0:
        raise Failed(f"{' '.join(map(str, cmd))} exited {p.returncode}:\n{(err or '')[-3000:]}")
    return p.returncode, out or "", err or ""


def docker(*args, timeout=60, check=True):
    return run(["docker", *args], timeout, check=check)


def compose_cmd():
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    rc, _, _ = run(["docker", "compose", "version"], 30, check=False)
    if rc == 0:
        return ["docker", "compose"]
    raise Failed("neither docker-compose nor `docker compose` is available")


def inspect(cid):
    _, out, _ = docker("inspect", cid, timeout=30)
    return json.loads(out)[0]


def container_ip(cid):
    nets = inspect(cid)["NetworkSettings"]["Networks"]
    for name, n in nets.items():
        if name.endswith("_mesh") and n.get("IPAddress"):
            return n["IPAddress"]
    return next((n["IPAddress"] for n in nets.values() if n.get("IPAddress")), "")


def docker_time(s):
    """Docker's RFC 3339 time with nanoseconds, as a Unix timestamp."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", s)
    if not m:
        return None
    frac = (m.group(2) or "0")[:6].ljust(6, "0")
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.datetime.fromisoformat(f"{m.group(1)}.{frac}{tz}").timestamp()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- HTTP --------------------------------------------------------------------

def metrics(ip, port=8083):
    """A service's Prometheus counters summed over labels ({} if unreachable)."""
    try:
        text = httpx.get(f"http://{ip}:{port}/metrics", timeout=3).text
    except httpx.HTTPError:
        return {}
    out = collections.Counter()
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(" ", 1)
        if len(parts) == 2:
            try:
                out[parts[0].split("{", 1)[0]] += float(parts[1])
            except ValueError:
                pass
    return out


def gen_tokens(ip):
    return metrics(ip).get("ragmesh_llm_generation_tokens_total", 0.0)


def running(ip):
    return metrics(ip).get("ragmesh_llm_num_requests_running", 0.0)


def status_of(url, timeout=3):
    try:
        return httpx.get(url, timeout=timeout).status_code
    except httpx.HTTPError:
        return 0


def wait_for(pred, within, step=0.2):
    end = time.monotonic() + within
    while True:
        v = pred()
        if v or time.monotonic() >= end:
            return v
        time.sleep(step)


class Stream:
    """One streaming chat completion, read and classified line by line."""

    def __init__(self, max_tokens):
        self.max_tokens = max_tokens
        self.t_start = self.t_end = self.t_first = None
        self.status = None
        self.tokens = 0  # content chunks received
        self.finish = None
        self.error = None  # the error event's object
        self.done = False
        self.problems = []  # why it is neither a clean finish nor a clean error end

    @property
    def kind(self):
        if self.problems:
            return "failed"
        return "error_event" if self.error is not None else "ok"


def one_stream(client, url, max_tokens, bound_s=90, prompt=PROMPT):
    s = Stream(max_tokens)
    s.t_start = time.time()
    body = {"model": MODEL, "stream": True, "max_tokens": max_tokens, "ignore_eos": True,
            "temperature": 0, "messages": [{"role": "user", "content": prompt}]}
    last = None
    try:
        with client.stream("POST", url, json=body) as resp:
            s.status = resp.status_code
            if resp.status_code != 200:
                resp.read()
                s.problems.append(f"HTTP {resp.status_code}: {resp.text[:200]}")
                return s
            for line in resp.iter_lines():
                if time.time() - s.t_start > bound_s:
                    s.problems.append(f"still streaming after {bound_s} s")
                    break
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if s.done:
                    s.problems.append(f"data after [DONE]: {data[:120]}")
                    continue
                if data == "[DONE]":
                    s.done = True
                    last = data
                    continue
                if s.error is not None:
                    s.problems.append(f"data after the error event: {data[:120]}")
                try:
                    v = json.loads(data)
                except ValueError:
                    s.problems.append(f"cut JSON line: {data[:120]}")
                    continue
                last = data
                if "error" in v:
                    s.error = v["error"]
                    continue
                ch = (v.get("choices") or [{}])[0]
                if (ch.get("delta") or {}).get("content"):
                    s.tokens += 1
                    if s.t_first is None:
                        s.t_first = time.time()
                if ch.get("finish_reason"):
                    s.finish = ch["finish_reason"]
    except httpx.ReadTimeout:
        s.problems.append("hung: no byte for 30 s")
    except httpx.HTTPError as e:
        s.problems.append(f"connection: {type(e).__name__}: {e}")
    finally:
        s.t_end = time.time()
    if s.problems:
        return s
    if not s.done or last != "[DONE]":
        s.problems.append("no [DONE] at the end (cut)")
    elif s.error is not None:
        if not isinstance(s.error, dict) or not s.error.get("message") \
                or not {"type", "param", "code"} <= set(s.error):
            s.problems.append(f"error event not OpenAI's shape (message, type, param, code): {s.error}")
        if s.tokens == 0:
            # a stream that had not started is retried elsewhere by the pool
            s.problems.append(f"error event before any token: {s.error}")
        if s.finish:
            s.problems.append("error event after a finish_reason chunk")
    elif not s.finish:
        s.problems.append("no finish_reason chunk")
    elif s.tokens == 0:
        s.problems.append("no content")
    return s


class Load:
    """One thread per entry of `max_tokens`, each sending streaming chats of
    that length back to back until stopped."""

    def __init__(self, url, max_tokens):
        self.url, self.max_tokens = url, max_tokens
        self.results = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = []

    def start(self):
        for i, n in enumerate(self.max_tokens):
            t = threading.Thread(target=self._work, args=(n,), name=f"load-{i}", daemon=True)
            t.start()
            self.threads.append(t)

    def _work(self, max_tokens):
        timeout = httpx.Timeout(connect=5, read=30, write=5, pool=5)
        with httpx.Client(timeout=timeout) as client:
            while not self.stop.is_set():
                s = one_stream(client, self.url, max_tokens)
                with self.lock:
                    self.results.append(s)
                if s.problems:
                    time.sleep(0.2)  # a failing gateway is not hammered

    def finish(self, within=45):
        """Stops sending and waits for the streams in flight; the number of
        workers still stuck after `within` seconds."""
        self.stop.set()
        end = time.monotonic() + within
        for t in self.threads:
            t.join(max(0.0, end - time.monotonic()))
        return sum(t.is_alive() for t in self.threads)


def summarize(report, label, results, stuck):
    kinds = collections.Counter(s.kind for s in results)
    report.info(f"{label}: {len(results) + stuck} requests sent, {kinds['ok']} succeeded, "
                f"{kinds['error_event']} ended with an error event + [DONE], "
                f"{kinds['failed'] + stuck} failed")
    why = collections.Counter(p.split(":")[0] for s in results for p in s.problems)
    for reason, n in why.most_common():
        report.info(f"  failed x{n}: {reason}")
    for s in [s for s in results if s.problems][:5]:
        report.info(f"  e.g. {s.problems}")
    if stuck:
        report.info(f"  failed x{stuck}: still streaming when the phase ended (hung)")
    errs = collections.Counter(json.dumps(s.error)[:220] for s in results if s.error is not None)
    for e, n in errs.most_common(3):
        report.info(f"  error event x{n}: {e}")
    return kinds


# --- the run -----------------------------------------------------------------

class Mesh:
    def __init__(self, report, model_dir):
        self.report = report
        self.project = f"{PROJECT_PREFIX}{os.getpid()}"
        self.demo = tempfile.mkdtemp(prefix=f"{self.project}-demo-")
        os.chmod(self.demo, 0o755)  # read by uid 10001 in the gateway
        self.port = free_port()
        self.compose = compose_cmd()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("COMPOSE_", "RAGMESH_", "DOCKER_BUILDKIT"))}
        env.update({
            "RAGMESH_IMAGE": TAG,
            "RAGMESH_MODEL_DIR": str(pathlib.Path(model_dir).resolve()),
            "RAGMESH_DEMO_DIR": self.demo,
            "RAGMESH_GATEWAY_BIND": "127.0.0.1",
            "RAGMESH_GATEWAY_PORT": str(self.port),
            "RAGMESH_SHUTDOWN_GRACE_S": str(GRACE_S),
            "RAGMESH_STOP_GRACE_PERIOD": f"{STOP_GRACE_S}s",
            "RAGMESH_MESH_RESOLVE_INTERVAL_S": "1",
            "RAGMESH_MESH_PROBE_INTERVAL_MS": "200",
        })
        self.env = env
        self.ids = {}
        self.base = f"http://127.0.0.1:{self.port}"

    def compose_run(self, *args, timeout=120, check=True, project=None):
        cmd = [*self.compose, "-f", str(COMPOSE_FILE), "-p", project or self.project, *args]
        return run(cmd, timeout, env=self.env, check=check)

    def up(self):
        self.compose_run("up", "-d", timeout=180)
        for svc in SERVICES:
            _, out, _ = self.compose_run("ps", "-q", svc, timeout=30)
            self.ids[svc] = out.strip().splitlines()[0] if out.strip() else ""

    def logs(self, svc, tail=40):
        cid = self.ids.get(svc)
        if not cid:
            return ""
        _, out, err = docker("logs", "--tail", str(tail), cid, timeout=30, check=False)
        return out + err

    def down(self):
        rc, _, err = self.compose_run("down", "-v", "-t", "5", timeout=90, check=False)
        # whatever is left (a compose that failed or timed out): removed by label
        label = f"label=com.docker.compose.project={self.project}"
        _, left, _ = docker("ps", "-aq", "--filter", label, timeout=30, check=False)
        if left.split():
            docker("rm", "-f", "-v", *left.split(), timeout=60, check=False)
        for kind in ("network", "volume"):
            _, names, _ = docker(kind, "ls", "-q", "--filter", label, timeout=30, check=False)
            if names.split():
                docker(kind, "rm", *names.split(), timeout=60, check=False)
        shutil.rmtree(self.demo, ignore_errors=True)
        return rc, err


def remove_stale_projects(mesh):
    """Projects of earlier runs of this script whose process is gone (a run
    killed before its teardown)."""
    names = set()
    for what in (["ps", "-a"], ["network", "ls"], ["volume", "ls"]):
        _, out, _ = docker(*what, "--filter", "label=com.docker.compose.project",
                           "--format", '{{.Label "com.docker.compose.project"}}', timeout=30, check=False)
        names.update(n for n in out.split() if n.startswith(PROJECT_PREFIX))
    tmp = pathlib.Path(tempfile.gettempdir())
    names.update(d.name.split("-demo-")[0] for d in tmp.glob(f"{PROJECT_PREFIX}*-demo-*"))
    for name in sorted(n for n in names if re.fullmatch(rf"{PROJECT_PREFIX}\d+", n)):
        alive = True
        try:
            os.kill(int(name[len(PROJECT_PREFIX):]), 0)
        except ProcessLookupError:
            alive = False
        except PermissionError:
            pass
        if not alive:
            mesh.compose_run("down", "-v", "-t", "1", timeout=120, check=False, project=name)
            for d in tmp.glob(f"{name}-demo-*"):
                shutil.rmtree(d, ignore_errors=True)
            print(f"  removed the stale project {name}")


def build_image(report, bin_dir):
    report.section("1. the image, as CI builds it (no cargo)")
    for b in sorted(set(SERVICES.values())):
        report.require(os.access(os.path.join(bin_dir, b), os.X_OK), f"{b} built", f"in {bin_dir}")
    t = time.monotonic()
    rc, out, err = run([str(ROOT / "scripts/base-image.sh")], 300, check=False)
    report.timed("scripts/base-image.sh", time.monotonic() - t)
    report.require(rc == 0, "scripts/base-image.sh", err[-2000:] if rc else out.strip())
    t = time.monotonic()
    rc, out, err = run([str(ROOT / "scripts/image.sh"), "--bin-dir", bin_dir, "--tag", TAG], 240, check=False)
    report.timed(f"scripts/image.sh --bin-dir {bin_dir} --tag {TAG}", time.monotonic() - t)
    report.require(rc == 0 and out.strip().splitlines()[-1:] == [TAG], "scripts/image.sh", err[-2000:])
    for line in err.splitlines():
        if line.startswith(("image:", "image-bundle:")):
            report.info(line)
    img = json.loads(docker("image", "inspect", TAG, timeout=30)[1])[0]
    report.check(img["Config"]["User"] == f"{UID}:{UID}", "image USER is numeric 10001", img["Config"]["User"])
    report.check(not img["Config"].get("Healthcheck"), "image has no HEALTHCHECK")
    # distroless: no shell to start, and each role's binary runs on its own
    rc, _, err = docker("run", "--rm", "--entrypoint", "/bin/sh", TAG, "-c", "true", timeout=60, check=False)
    report.check(rc != 0, "the image has no shell (/bin/sh cannot start)", err.strip()[-200:])
    rc, out, err = docker("run", "--rm", "--read-only", "--user", f"{UID}:{UID}", TAG,
                          "ragmesh-llm-runner", "--help", timeout=60, check=False)
    report.check(rc == 0 and "Usage" in out, "ragmesh-llm-runner --help runs in the image", err.strip()[-200:])
    report.info(f"{TAG}: {img['Size'] / 1e6:.1f} MB")


def check_containers(report, mesh):
    report.section("3. the containers run as the chart runs them")
    for svc, binary in SERVICES.items():
        cid = mesh.ids[svc]
        c = inspect(cid)
        cfg, host = c["Config"], c["HostConfig"]
        report.check(c["State"]["Running"], "container running", svc)
        report.check(cfg.get("User") == f"{UID}:{UID}", "Config.User 10001:10001", f"{svc}: {cfg.get('User')}")
        report.check(host.get("ReadonlyRootfs") is True, "read-only root filesystem", svc)
        report.check("ALL" in (host.get("CapDrop") or []), "all capabilities dropped", svc)
        report.check(any("no-new-privileges" in o for o in host.get("SecurityOpt") or []),
                     "no-new-privileges", svc)
        # env vars only: the process is the bare binary, no arguments
        report.check(not cfg.get("Entrypoint") and cfg.get("Cmd") == [binary]
                     and c.get("Path") == binary and c.get("Args") == [],
                     "command is the bare binary (configured by env only)",
                     f"{svc}: Entrypoint {cfg.get('Entrypoint')} Cmd {cfg.get('Cmd')} Args {c.get('Args')}")
        env = dict(e.split("=", 1) for e in cfg.get("Env") or [] if "=" in e)
        report.check(env.get("RAGMESH_SHUTDOWN_GRACE_S") == str(GRACE_S) and env.get("RAGMESH_HOST") == "0.0.0.0",
                     "settings arrive as env vars", svc)
        mounts = {m["Destination"]: m for m in c.get("Mounts") or []}
        if svc in MODEL_MOUNTS:
            report.check("/models" in mounts and not mounts["/models"]["RW"], "models mounted read-only", svc)
        _, top, _ = docker("top", cid, "-eo", "pid,uid,gid,args", timeout=30)
        procs = [line.split(None, 3)[1:] for line in top.splitlines()[1:] if line.strip()]
        report.check(bool(procs) and all(p[0] == UID and p[1] == UID for p in procs),
                     "every process runs as uid/gid 10001 (docker top)", f"{svc}: {procs}")
        report.check(len(procs) == 1 and procs[0][2].strip() == binary,
                     "one process: the binary, no flags (docker top)", f"{svc}: {procs}")
    gw = inspect(mesh.ids["gateway"])
    nets = set(gw["NetworkSettings"]["Networks"])
    leaf_nets = set(inspect(mesh.ids["runner-a"])["NetworkSettings"]["Networks"])
    report.check(len(leaf_nets) == 1 and leaf_nets < nets, "leaf services only on the private network",
                 f"runner-a {sorted(leaf_nets)}, gateway {sorted(nets)}")


def wait_ready(report, mesh):
    t = time.monotonic()
    url = f"{mesh.base}/ready"

    def ready():
        for svc, cid in mesh.ids.items():
            state = inspect(cid)["State"]
            if not state["Running"]:
                raise Failed(f"{svc} exited ({state['ExitCode']}):\n{mesh.logs(svc)}")
        return status_of(url) == 200

    ok = wait_for(ready, 150, step=0.5)
    report.timed("gateway /ready 200 after `up`", time.monotonic() - t)
    report.require(ok, "gateway /ready 200", f"not within 150 s:\n{mesh.logs('gateway')}")
    # the host reaches the runners on the internal network (their /metrics)
    for svc in ("runner-a", "runner-b"):
        ip = container_ip(mesh.ids[svc])
        report.require(status_of(f"http://{ip}:8083/ready") == 200,
                       "the host reaches a runner's HTTP port at its container IP", f"{svc} {ip}:8083")


def rag_chat(report, mesh):
    report.section("4. a RAG chat through the gateway container")
    with httpx.Client(base_url=mesh.base, timeout=60) as c:
        r = c.post("/v1/collections", json={"name": "e2e-facts"})
        report.require(r.status_code == 200, "create collection", f"{r.status_code} {r.text[:200]}")
        t = time.monotonic()
        r = c.post("/v1/collections/e2e-facts/documents", json={"documents": DOCS})
        report.timed(f"ingest {len(DOCS)} documents", time.monotonic() - t)
        report.require(r.status_code == 200 and r.json().get("documents") == len(DOCS),
                       "ingest", f"{r.status_code} {r.text[:200]}")
        for question, doc, fact in QUESTIONS:
            body = {"model": MODEL, "temperature": 0, "max_tokens": 32,
                    "messages": [{"role": "user", "content": question}],
                    "rag": {"collection": "e2e-facts", "top_k": 2}}
            t = time.monotonic()
            r = c.post("/v1/chat/completions", json=body)
            took = time.monotonic() - t
            if not report.check(r.status_code == 200, "RAG chat 200", f"{r.status_code} {r.text[:300]}"):
                continue
            msg = r.json()["choices"][0]["message"]
            cites = msg.get("citations") or []
            report.info(f"Q: {question}  ({took:.1f} s)")
            report.info(f"A: {msg.get('content', '')!r}")
            report.info("citations: " + ", ".join(f"[{x.get('index')}] {x.get('doc_id')} {x.get('score', 0):.3f}"
                                                  for x in cites))
            report.check(bool(cites) and cites[0].get("doc_id") == doc, "first citation names the right document",
                         f"want {doc}: {[x.get('doc_id') for x in cites]}")
            report.check(all({"index", "doc_id", "chunk_id", "score", "text"} <= set(x) for x in cites),
                         "citations carry index, doc_id, chunk_id, score, text")
            report.check(fact in (msg.get("content") or ""), "the answer states the fact", f"{fact} in answer")
            # the same over SSE: citations on the first chunk
            first = None
            with c.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as s:
                for line in s.iter_lines():
                    if line.startswith("data: {") and first is None:
                        first = json.loads(line[6:])
            sc = (first or {}).get("citations") or []
            report.check(bool(sc) and sc[0].get("doc_id") == doc, "stream's first chunk cites the right document",
                         f"want {doc}: {[x.get('doc_id') for x in sc]}")


def gateway_identity(mesh):
    c = inspect(mesh.ids["gateway"])
    return (c["State"]["StartedAt"], c["State"]["Pid"], c["RestartCount"])


def rejoin(report, mesh, label):
    """`docker start` runner-a: it turns ready and the gateway, not
    restarted, sends it calls again."""
    gw_before = gateway_identity(mesh)
    cid = mesh.ids["runner-a"]
    t = time.monotonic()
    docker("start", cid, timeout=60)
    ip = container_ip(cid)
    ok = wait_for(lambda: status_of(f"http://{ip}:8083/ready") == 200, 90, step=0.3)
    report.timed(f"{label}: runner-a ready after `docker start`", time.monotonic() - t)
    report.require(ok, f"{label}: runner-a ready again", f"{ip}:8083\n{mesh.logs('runner-a')}")
    t = time.monotonic()
    sent = okn = 0
    failures = []
    body = {"model": MODEL, "temperature": 0, "max_tokens": 8,
            "messages": [{"role": "user", "content": "Name a colour."}]}
    used = False
    end = time.monotonic() + 45
    with httpx.Client(base_url=mesh.base, timeout=60) as c:
        while not used and time.monotonic() < end:
            # two at once: least-outstanding puts one on each replica
            rs = []

            def call():
                try:
                    rs.append(c.post("/v1/chat/completions", json=body).status_code)
                except httpx.HTTPError as e:
                    rs.append(f"{type(e).__name__}: {e}")

            threads = [threading.Thread(target=call) for _ in range(2)]
            for th in threads:
                th.start()
            for th in threads:
                th.join(65)
            sent += 2
            okn += sum(r == 200 for r in rs)
            failures.extend(r for r in rs if r != 200)
            used = gen_tokens(ip) > 0
            if not used:
                time.sleep(0.3)
    report.timed(f"{label}: until the gateway used runner-a again", time.monotonic() - t)
    report.info(f"{label}: {sent} requests sent, {okn} succeeded, {sent - okn} failed")
    report.check(used, f"{label}: the gateway sends calls to the restarted runner-a",
                 f"its generated tokens: {gen_tokens(ip)}")
    report.check(okn == sent, f"{label}: every request meanwhile succeeded", f"{okn}/{sent} {failures[:3]}")
    report.check(gateway_identity(mesh) == gw_before, f"{label}: without a gateway restart",
                 f"{gw_before} -> {gateway_identity(mesh)}")


def admitted(m):
    """Requests a runner has taken in: those given a slot (each records its
    queue time), those waiting for one, those that timed out waiting."""
    return (m.get("ragmesh_llm_request_queue_time_seconds_count", 0.0)
            + m.get("ragmesh_llm_num_requests_waiting", 0.0)
            + m.get("ragmesh_llm_queue_timeouts_total", 0.0))


def rolling_restart(report, mesh):
    report.section("5. rolling restart: docker stop (SIGTERM) runner-a under a stream of chats")
    a, b = mesh.ids["runner-a"], mesh.ids["runner-b"]
    ip_a, ip_b = container_ip(a), container_ip(b)
    load = Load(f"{mesh.base}/v1/chat/completions", [STOP_TOKENS] * WORKERS + [SHORT_TOKENS])
    load.start()
    try:
        busy = wait_for(lambda: running(ip_a) >= 1, 30, step=0.05)
        report.require(busy, "runner-a streams before the SIGTERM", "within 30 s of the load's start")
        in_flight_a = running(ip_a)
        b_before = gen_tokens(ip_b)
        t_term = time.time()
        stop = subprocess.Popen(["docker", "stop", "-t", str(STOP_GRACE_S), a], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        # while it drains: /ready turns 503, and runner-a takes in nothing
        # new (its admitted count, read once the drain is under way, stays)
        ready_codes, seen = [], []
        while stop.poll() is None and time.time() - t_term < STOP_GRACE_S + 15:
            code = status_of(f"http://{ip_a}:8083/ready", timeout=1)
            ready_codes.append(code)
            if code == 503:
                m = metrics(ip_a)
                if m:
                    seen.append(admitted(m))
            time.sleep(0.05)
        if stop.poll() is None:
            os.killpg(stop.pid, signal.SIGKILL)
        _, stop_err = stop.communicate()
        state = inspect(a)["State"]
        t_exit = docker_time(state["FinishedAt"]) or time.time()
        time.sleep(3)  # requests after the exit: runner-b alone
    finally:
        stuck = load.finish()
    res = load.results
    drain = t_exit - t_term
    report.timed("runner-a: SIGTERM to exit", drain)
    report.info(f"runner-a had {in_flight_a:.0f} request(s) running just before the SIGTERM; "
                f"its /ready during the drain: {dict(collections.Counter(ready_codes))} (0: refused)")
    kinds = summarize(report, "rolling restart", res, stuck)
    report.check(stop.returncode == 0, "docker stop returned", stop_err.strip())
    report.check(state["ExitCode"] == 0 and not state.get("OOMKilled"), "runner-a exited 0",
                 f"ExitCode {state['ExitCode']}")
    report.check(drain <= GRACE_S + 1, "runner-a exited within its grace period",
                 f"{drain:.1f} s (grace {GRACE_S} s)")
    log = mesh.logs("runner-a", tail=200)
    report.check("draining" in log, "runner-a logged its drain")
    report.check("grace period over" not in log, "runner-a's drain finished before the deadline")
    if drain > 0.5:
        report.check(503 in ready_codes, "runner-a not ready (503) while it drains",
                     f"{dict(collections.Counter(ready_codes))}")
    # the first reading may still miss a request that arrived with the signal
    report.check(len(seen) < 3 or max(seen[1:]) == seen[1], "runner-a takes in nothing new while it drains",
                 f"admitted count over {len(seen)} readings: {seen[1] if len(seen) > 1 else '-'} "
                 f"-> {max(seen[1:]) if len(seen) > 1 else '-'}")
    in_flight = [s for s in res if s.t_start < t_term < s.t_end]
    during = [s for s in res if t_term <= s.t_start < t_exit]
    after = [s for s in res if s.t_start >= t_term]
    report.info(f"streams in flight at the SIGTERM: {len(in_flight)}; started during the drain: "
                f"{len(during)}; after the exit: {sum(s.t_start >= t_exit for s in res)}")
    report.check(len(in_flight) >= 1 and all(s.kind == "ok" for s in in_flight),
                 "every stream in flight at the SIGTERM completed (finish_reason, [DONE], no error)",
                 f"{dict(collections.Counter(s.kind for s in in_flight))}")
    if drain > 0.5:
        report.check(len(during) >= 1, "requests were sent during the drain", f"{len(during)}")
    report.check(stuck == 0 and kinds["ok"] == len(res) and bool(res), "every request succeeded",
                 f"{kinds['ok']}/{len(res) + stuck}")
    need = sum(s.max_tokens for s in after if s.kind == "ok")
    b_delta = gen_tokens(ip_b) - b_before
    report.check(bool(after) and b_delta >= need,
                 "runner-b generated at least the tokens of every request sent after the SIGTERM",
                 f"{b_delta:.0f} >= {need} ({len(after)} requests)")
    rejoin(report, mesh, "after the stop")


def kill_mid_stream(report, mesh):
    report.section("6. docker kill (SIGKILL) runner-a mid-stream")
    a, b = mesh.ids["runner-a"], mesh.ids["runner-b"]
    ip_a, ip_b = container_ip(a), container_ip(b)
    # long streams only: at the kill every request on runner-a is mid-stream
    # (a request it has not answered yet is step 7's case)
    load = Load(f"{mesh.base}/v1/chat/completions", [KILL_TOKENS] * WORKERS)
    load.start()
    try:
        busy = wait_for(lambda: running(ip_a) >= 1, 30, step=0.05)
        report.require(busy, "runner-a streams before the SIGKILL", "within 30 s of the load's start")
        tok = gen_tokens(ip_a)
        wait_for(lambda: gen_tokens(ip_a) >= tok + 8, 10, step=0.05)  # decoding: tokens went out
        in_flight_a = running(ip_a)
        b_before = gen_tokens(ip_b)
        t_kill0 = time.time()
        docker("kill", a, timeout=30)
        t_kill1 = time.time()
        time.sleep(4)  # the other streams go on; new ones start on runner-b
    finally:
        stuck = load.finish()
    res = load.results
    state = inspect(a)["State"]
    report.info(f"runner-a had {in_flight_a:.0f} request(s) running just before the SIGKILL; "
                f"exit code {state['ExitCode']}")
    kinds = summarize(report, "kill", res, stuck)
    report.check(stuck == 0 and kinds["failed"] == 0 and res,
                 "every stream completed or ended with an error event + [DONE] (none cut, dropped or hung)",
                 f"{kinds['failed'] + stuck} did not")
    errored = [s for s in res if s.kind == "error_event"]
    report.check(len(errored) >= 1, "the killed runner's stream(s) ended with an SSE error event, then [DONE]",
                 f"{len(errored)} error events")
    report.check(all(s.t_start < t_kill1 and s.t_end > t_kill0 and s.tokens > 0 for s in errored),
                 "only streams in flight at the kill, with tokens already sent, ended with the error event")
    in_flight = [s for s in res if s.t_start < t_kill0 < s.t_end]
    report.info(f"streams in flight at the kill: {len(in_flight)} "
                f"({sum(s.kind == 'ok' for s in in_flight)} completed, "
                f"{sum(s.kind == 'error_event' for s in in_flight)} error event)")
    report.check(any(s.kind == "ok" for s in in_flight), "the other in-flight streams continued and completed")
    after = [s for s in res if s.t_start >= t_kill1]
    b_delta = gen_tokens(ip_b) - b_before
    report.check(len(after) >= 1 and all(s.kind == "ok" for s in after),
                 "every request started after the kill succeeded",
                 f"{sum(s.kind == 'ok' for s in after)}/{len(after)}")
    need = sum(s.max_tokens for s in after)
    report.check(b_delta >= need, "runner-b generated at least their tokens",
                 f"{b_delta:.0f} >= {need}")
    report.section("   restore runner-a")
    rejoin(report, mesh, "after the kill")


def kill_in_prefill(report, mesh):
    """A request the killed runner had taken but not answered yet (its
    prompt still being read: no token, nothing sent to the client) is
    retried on the other runner: the client sees a normal stream."""
    report.section("7. docker kill (SIGKILL) runner-a while it reads a prompt (before its first token)")
    a = mesh.ids["runner-a"]
    ip_a = container_ip(a)
    url = f"{mesh.base}/v1/chat/completions"
    before = gen_tokens(ip_a)
    results = []

    def go():
        with httpx.Client(timeout=httpx.Timeout(connect=5, read=60, write=5, pool=5)) as c:
            results.append(one_stream(c, url, 8, prompt=LONG_PROMPT))

    # two at once: least-outstanding puts one on each runner
    threads = [threading.Thread(target=go, daemon=True) for _ in range(2)]
    for th in threads:
        th.start()
    took_it = wait_for(lambda: running(ip_a) >= 1, 20, step=0.01)
    m = metrics(ip_a)
    in_prefill = took_it and m.get("ragmesh_llm_generation_tokens_total", 0.0) == before
    t_kill = time.time()
    docker("kill", a, timeout=30)
    for th in threads:
        th.join(90)
    stuck = sum(th.is_alive() for th in threads)
    kinds = summarize(report, "kill in prefill", results, stuck)
    report.require(took_it, "runner-a took one of the two long-prompt requests", "within 20 s")
    if not report.check(in_prefill, "the kill landed while runner-a read the prompt (no token generated yet)",
                        f"runner-a generated tokens: {before} -> {m.get('ragmesh_llm_generation_tokens_total')}"):
        return
    report.check(stuck == 0 and kinds["failed"] == 0,
                 "the request runner-a had not answered yet was retried on runner-b (no failure)",
                 "; ".join(p for s in results for p in s.problems)[:300])
    report.info(f"killed {time.time() - t_kill:.1f} s before the last stream ended; "
                f"{kinds['ok']} completed, {kinds['error_event']} error event (a first token that slipped out)")
    report.section("   restore runner-a")
    rejoin(report, mesh, "after the prefill kill")


class Budget:
    """Interrupts the main thread once the run's time is up."""

    def __enter__(self):
        def over(*_):
            raise OutOfTime(f"the run took more than {BUDGET_S} s")

        def terminated(*_):
            raise OutOfTime("terminated (SIGTERM)")
        signal.signal(signal.SIGALRM, over)
        # a test runner that gives up on us still gets the teardown
        signal.signal(signal.SIGTERM, terminated)
        signal.alarm(BUDGET_S)

    def __exit__(self, *_):
        signal.alarm(0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin-dir", required=True, help="the ragmesh binaries (a cargo profile folder)")
    ap.add_argument("--model-dir", default=os.path.expanduser("~/.cache/ragmesh/models"),
                    help="the models folder, mounted read-only at /models")
    args = ap.parse_args()
    bin_dir = str(pathlib.Path(args.bin_dir).resolve())
    report = Report()
    print(f"container_check: {COMPOSE_FILE.relative_to(ROOT)} with {TAG} from {bin_dir}", flush=True)
    mesh = None
    failed_with = None
    try:
        with Budget():
            try:
                rc, _, _ = run(["docker", "info"], 30, check=False)
                report.require(rc == 0, "the Docker daemon answers (docker info)")
                report.require(os.path.isdir(args.model_dir), "model dir exists", args.model_dir)
                build_image(report, bin_dir)
                report.section("2. the mesh from compose.yaml")
                mesh = Mesh(report, args.model_dir)
                remove_stale_projects(mesh)
                t = time.monotonic()
                mesh.up()
                report.timed(f"{' '.join(mesh.compose)} -p {mesh.project} up -d", time.monotonic() - t)
                wait_ready(report, mesh)
                check_containers(report, mesh)
                rag_chat(report, mesh)
                rolling_restart(report, mesh)
                kill_mid_stream(report, mesh)
                kill_in_prefill(report, mesh)
            except Failed as e:
                failed_with = str(e)
            except OutOfTime as e:
                report.check(False, "the run finished within its budget", str(e))
    finally:
        if mesh is not None:
            if report.failures:
                for svc in SERVICES:
                    print(f"\n-- last log lines of {svc}:\n{mesh.logs(svc, tail=25)}")
            print("\n== teardown", flush=True)
            t = time.monotonic()
            rc, err = mesh.down()
            report.timed(f"{' '.join(mesh.compose)} down -v", time.monotonic() - t)
            report.check(rc == 0, "compose down -v", err[-500:])
    if failed_with and failed_with not in "\n".join(report.failures):
        report.failures.append(failed_with)
    total = time.monotonic() - report.t0
    print("\ncontainer_check: timings")
    for what, s in report.timings:
        print(f"  {s:7.1f} s  {what}")
    print(f"  {total:7.1f} s  total")
    print("container_check: checks")
    report.finish("container_check", f" in {total:.0f} s")


if __name__ == "__main__":
    main()
