#!/usr/bin/env python3
"""Gateway overhead: /v1/chat/completions through the gateway to a
zero-work upstream (ragmesh-stub-upstream, a fixed completion) versus the
same upstream called directly, in one run, with oha (open loop at a fixed
rate, latency corrected for coordinated omission; then closed loop for the
maximum throughput).

Direct and gateway runs alternate for `rounds` rounds and the medians are
reported. RAGMESH_BENCH_PIN=1 gives the load generator core 0 and the
servers core 1 (taskset) instead of letting all three share both cores
(the OTLP receiver below goes with the load generator).

With RECEIVER_BIN (ragmesh-otlp-receiver) two more gateways join each
round, the same but for tracing on (sampler always on, OTLP/gRPC export):
"traced" exports to that local receiver, "traced_away" to a closed port
(a collector that is down). The cost of tracing is their p99 minus the
untraced gateway's, measured in the same rounds (issue 18's target:
<= +0.1 ms). Their spans exported and dropped are printed.

Usage: gateway_overhead.py GATEWAY_BIN STUB_BIN OHA_BIN [rate] [seconds] [rounds] [RECEIVER_BIN]
"""

import json
import shutil
import statistics
import os
import subprocess
import sys
import tempfile
import time

BODY = json.dumps(
    {
        "model": "zero",
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 16,
    }
)


PIN = (os.environ.get("RAGMESH_BENCH_PIN", "0") == "1" and shutil.which("taskset")
       and (os.cpu_count() or 1) >= 2)


def pinned(cpu, argv):
    return ["taskset", "-c", str(cpu), *argv] if PIN else argv


def start(argv, env=None, key="http", cpu=1):
    p = subprocess.Popen(pinned(cpu, argv), stdout=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        if " listening " in line:
            addr = dict(kv.split("=", 1) for kv in line.split()[2:] if "=" in kv)
            return p, addr[key]
    p.kill()
    sys.exit(f"{argv[0]} did not start")


def oha(oha_bin, url, args):
    out = subprocess.run(
        pinned(0, [oha_bin, "--no-tui", "--output-format", "json", "-m", "POST",
         "-T", "application/json", "-d", BODY, *args, url]),
        check=True, capture_output=True, text=True,
    ).stdout
    r = json.loads(out)
    pct = r["latencyPercentiles"]
    codes = r.get("statusCodeDistribution", {})
    return {
        "rps": r["summary"]["requestsPerSec"],
        "p50_ms": pct["p50"] * 1e3,
        "p99_ms": pct["p99"] * 1e3,
        "ok": codes.get("200", 0),
        "total": sum(codes.values()),
    }


def counter(addr, series):
    import urllib.request
    try:
        text = urllib.request.urlopen(f"http://{addr}/metrics", timeout=5).read().decode()
    except OSError:
        return 0.0
    return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith(series))


def main():
    gw_bin, stub_bin, oha_bin = sys.argv[1:4]
    rate = int(sys.argv[4]) if len(sys.argv) > 4 else 2000
    secs = int(sys.argv[5]) if len(sys.argv) > 5 else 10
    rounds = int(sys.argv[6]) if len(sys.argv) > 6 else 3
    receiver_bin = sys.argv[7] if len(sys.argv) > 7 else None
    tmp = tempfile.mkdtemp(prefix="ragmesh-overhead-")
    stub, stub_addr = start([stub_bin, "--port", "0", "--name", "zero"])
    cfg = os.path.join(tmp, "gateway.toml")
    with open(cfg, "w") as f:
        f.write(
            '[[model]]\nname = "zero"\nretries = 0\n'
            f'[[model.upstream]]\nurl = "http://{stub_addr}/v1"\n'
        )
    env = dict(os.environ, RUST_LOG="warn")
    if os.environ.get("RAGMESH_BENCH_GATEWAY_WORKERS"):
        # the gateway's runtime threads only (oha and the stub keep theirs)
        env["RAGMESH_WORKERS"] = os.environ["RAGMESH_BENCH_GATEWAY_WORKERS"]
    gw, gw_addr = start(
        [gw_bin, "--port", "0", "--config", cfg, "--llm-model", "none",
         "--data-dir", os.path.join(tmp, "data")],
        env,
    )
    direct = f"http://{stub_addr}/v1/chat/completions"
    via = f"http://{gw_addr}/v1/chat/completions"
    targets = [("direct", direct), ("gateway", via)]
    receiver = traced = away = None
    if receiver_bin:
        # pinned, the receiver shares the load generator's core: a collector
        # runs on other machines than the gateway it collects from
        receiver, grpc_addr = start([receiver_bin, "--port", "0"], key="grpc", cpu=0)
        tenv = dict(env, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{grpc_addr}",
                    OTEL_EXPORTER_OTLP_PROTOCOL="grpc", OTEL_TRACES_SAMPLER="always_on")
        traced, traced_addr = start(
            [gw_bin, "--port", "0", "--config", cfg, "--llm-model", "none",
             "--data-dir", os.path.join(tmp, "data-traced")],
            tenv,
        )
        targets.append(("traced", f"http://{traced_addr}/v1/chat/completions"))
        import socket
        with socket.socket() as sock:  # a port nobody listens on
            sock.bind(("127.0.0.1", 0))
            closed = sock.getsockname()[1]
        aenv = dict(tenv, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{closed}")
        away, away_addr = start(
            [gw_bin, "--port", "0", "--config", cfg, "--llm-model", "none",
             "--data-dir", os.path.join(tmp, "data-away")],
            aenv,
        )
        targets.append(("traced_away", f"http://{away_addr}/v1/chat/completions"))
    try:
        for _, url in targets:  # warm connections and caches
            oha(oha_bin, url, ["-z", "2s", "-q", str(rate), "-c", "32"])
        runs = {name: [] for name, _ in targets}
        for _ in range(rounds):
            for name, url in targets:
                runs[name].append(oha(oha_bin, url, ["-z", f"{secs}s", "-q", str(rate), "-c", "32",
                                                     "--latency-correction"]))
        res = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in runs.items()}
        res["rounds"] = runs
        for name, url in targets[:2]:
            res[name + "_max"] = oha(oha_bin, url, ["-z", f"{max(secs // 2, 5)}s", "-c", "32"])
        if traced:
            time.sleep(6)  # one export delay: the last batch goes out
            res["traced_spans"] = {
                "exported": counter(traced_addr, "ragmesh_otel_spans_exported_total"),
                "dropped": counter(traced_addr, "ragmesh_otel_spans_dropped_total"),
            }
            res["traced_away_spans"] = {
                "exported": counter(away_addr, "ragmesh_otel_spans_exported_total"),
                "dropped": counter(away_addr, "ragmesh_otel_spans_dropped_total"),
            }
    finally:
        gw.kill()
        stub.kill()
        if traced:
            traced.kill()
        if away:
            away.kill()
        if receiver:
            receiver.terminate()
            out, _ = receiver.communicate(timeout=10)
            res["receiver"] = out.strip()
    d, g = res["direct"], res["gateway"]
    print(f"\nopen loop at {rate} req/s, {rounds} rounds of {secs} s each, medians "
          f"(32 connections, latency corrected; load generator {'on its own core' if PIN else 'unpinned'}):")
    for name in runs:
        print(f"  {name} p99 per round: " + ", ".join(f"{r['p99_ms']:.3f}" for r in runs[name]) + " ms")
    print(f"{'':>10} {'rps':>8} {'p50 ms':>8} {'p99 ms':>8} {'200s':>12}")
    for name in runs:
        r = res[name]
        print(f"{name:>10} {r['rps']:8.0f} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} {r['ok']:>8.0f}/{r['total']:<8.0f}")
    print(f"added by the gateway: p50 {g['p50_ms'] - d['p50_ms']:+.3f} ms, "
          f"p99 {g['p99_ms'] - d['p99_ms']:+.3f} ms (target: p99 <= +0.5 ms)")
    for name, what in (("traced", "to a local receiver"), ("traced_away", "to a closed port")):
        if name not in res:
            continue
        t, spans = res[name], res[name + "_spans"]
        print(f"added by tracing {what} ({name} - gateway): p50 {t['p50_ms'] - g['p50_ms']:+.3f} ms, "
              f"p99 {t['p99_ms'] - g['p99_ms']:+.3f} ms (target: p99 <= +0.1 ms); "
              f"spans exported {spans['exported']:.0f}, dropped {spans['dropped']:.0f}")
    if "receiver" in res:
        print(f"receiver: {res['receiver']}")
    dm, gm = res["direct_max"], res["gateway_max"]
    print(f"max throughput (closed loop, 32 connections): direct {dm['rps']:.0f} req/s, "
          f"gateway {gm['rps']:.0f} req/s ({gm['rps'] / dm['rps']:.2f}x), "
          f"gateway p99 {gm['p99_ms']:.2f} ms")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
