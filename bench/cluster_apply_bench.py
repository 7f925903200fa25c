#!/usr/bin/env python3
"""Apply -> traffic in the local cluster: how long from `kubectl apply` of a changed
VirtualService until the ingress gateway serves it.

Each change sets a new value of a response header on the coolstore's gateway route
(VirtualService coolstore/apigateway); a client in the node's network namespace polls the
gateway's Service over one keep-alive connection until a response carries the new value.
N changes with `kubectl apply` (client-side: kubectl downloads the API server's OpenAPI v2
document for every apply) and N with `kubectl apply --server-side`. Two clocks per change:
from the start of kubectl (what a user waits for, kubectl's own start-up and requests
included) and from its return (the write is in the API server; the rest is skiff's: watch
-> operator holdoff -> translate -> xDS push -> proxy swap). Prints p50/p90/p99/max of
each over N changes; not a pass/fail test (the goal is p99 <= 250 ms).

  bench/cluster_apply_bench.py DIR [N]     on the cluster up in DIR (scripts/local-cluster.sh up)
  scripts/local-cluster.sh bench [N]       the same

The story test runs it with --bench (N = 60 in scripts/test.sh)."""
import http.client
import json
import os
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "cluster"))
import localcluster as lc  # noqa: E402

HEADER = "x-skiff-bench"


def percentile(values, p):
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def run(cluster, n, timeout_per_change=60):
    def kubectl(*args, input=None):
        return lc.run(*cluster.exec_argv("kubectl", "--request-timeout=60s", *args), input=input,
                      timeout=120)

    vs = json.loads(kubectl("get", "-o", "json", "virtualservice", "-n", "coolstore",
                            "apigateway").stdout)
    gw_ip = json.loads(kubectl("get", "-o", "json", "service", "-n", "skiff-system",
                               "istio-ingressgateway").stdout)["spec"]["clusterIP"]
    spec = vs["spec"]
    base = {"apiVersion": vs["apiVersion"], "kind": vs["kind"],
            "metadata": {"name": "apigateway", "namespace": "coolstore"}, "spec": spec}
    route = spec["http"][0]
    stamp = f"{os.getpid()}-{int(time.time())}"
    modes = (("kubectl apply", []), ("kubectl apply --server-side", ["--server-side",
                                                                   "--force-conflicts"]))
    times = {name: ([], []) for name, _ in modes}
    seen = {}
    cond = threading.Condition()
    stop = threading.Event()

    def poller():
        lc.setns(cluster.netns_path)
        conn = None
        deadline = time.monotonic() + n * timeout_per_change + 60
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(gw_ip, 80, timeout=10)
                conn.request("GET", "/api/catalog")
                r = conn.getresponse()
                r.read()
                value = r.getheader(HEADER)
                now = time.monotonic()
                with cond:
                    if value is not None and value not in seen:
                        seen[value] = now
                        cond.notify_all()
            except (OSError, http.client.HTTPException):
                if conn:
                    conn.close()
                conn = None
                time.sleep(0.01)

    t = threading.Thread(target=poller, daemon=True)
    t.start()
    try:
        for name, flags in modes:
            from_start, from_return = times[name]
            for i in range(n + 1):  # change 0 warms up (a new header, or a new manager)
                value = f"{stamp}-{len(flags)}-{i}"
                route.setdefault("headers", {})["response"] = {"set": {HEADER: value}}
                doc = json.dumps(base)
                t0 = time.monotonic()
                kubectl("apply", *flags, "-f", "-", input=doc)
                t1 = time.monotonic()
                with cond:
                    ok = cond.wait_for(lambda: value in seen, timeout=timeout_per_change)
                if not ok:
                    raise RuntimeError(f"{name}, change {i}: the gateway did not serve "
                                       f"{HEADER}: {value} within {timeout_per_change} s")
                if i:
                    from_start.append((seen[value] - t0) * 1000)
                    from_return.append(max(0.0, seen[value] - t1) * 1000)
    finally:
        stop.set()
        t.join(timeout=30)
        route.get("headers", {}).pop("response", None)
        kubectl("replace", "-f", "-", input=json.dumps(base))

    def line(name, xs):
        return (f"  {name:<44} p50 {percentile(xs, 50):6.1f} ms  p90 {percentile(xs, 90):6.1f} ms"
                f"  p99 {percentile(xs, 99):6.1f} ms  max {max(xs):6.1f} ms")

    print(f"apply -> traffic in the local cluster, {n} changes of VirtualService "
          "coolstore/apigateway per mode (goal: p99 <= 250 ms):")
    for name, _ in modes:
        from_start, from_return = times[name]
        print(line(f"{name}: from its start", from_start))
        print(line(f"{name}: from its return", from_return))
    return times


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cluster = lc.Cluster(sys.argv[1])
    if not cluster.state or cluster.state.get("down"):
        print(f"no cluster up in {sys.argv[1]}", file=sys.stderr)
        return 1
    run(cluster, int(sys.argv[2]) if len(sys.argv) > 2 else 60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
