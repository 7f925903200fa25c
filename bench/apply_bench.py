#!/usr/bin/env python3
"""apply -> traffic: the time from a change until a gateway proxy serves the new route.

One skiff-operator, one skiff-proxy (gateway, over xDS) and a small upstream on 127.0.0.1.
Each change moves the one route of a VirtualService to a new prefix (/bench-N); the clock
starts at the change and stops when GET /bench-N/x through the gateway answers 200 (the
client asks every 0.5 ms on a kept-alive connection; before the route arrives the gateway
answers 404). The changes are made one at a time, after the previous one is served.

  file: the VirtualService's file is saved (written next to it, renamed into place);
        the operator runs with --config-dir and its default --watch-interval.
  kube: `kubectl apply` of the changed VirtualService on a real kube-apiserver + etcd
        (tests/kube/env.sh); three clocks: from starting kubectl (which takes ~250 ms on its
        own), from the moment an independent watch on the API server sees the change (the
        operator's watch gets it at about the same time: the goal's clock), and from
        kubectl's exit (which often comes after the operator has the change).

Prints p50/p90/p99/max per (path, holdoff). Never a pass/fail test (bench/README.md).
Usage: apply_bench.py --operator BIN --proxy BIN [--changes 60] [--holdoffs 100ms,0s]
                      [--paths file,kube] [--label NAME]"""
import argparse
import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "kube"))
import crdwait  # noqa: E402
KUBE_ENV = os.path.join(ROOT, "tests", "kube", "env.sh")
PROCS = []


def log(*a):
    print("[apply-bench]", *a, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def start(cmd, log_path, env=None):
    f = open(log_path, "a")
    p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    PROCS.append(p)
    return p


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per response, and no Nagle: a head and a body in two small segments would
    # wait for the proxy's delayed ACK (40 ms), which is the upstream's time, not skiff's.
    disable_nagle_algorithm = True

    def do_GET(self):
        self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")

    def log_message(self, *a):
        pass


def start_upstream():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv.server_address[1]


GATEWAY = """apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
"""


def service(address, port):
    return f"""apiVersion: v1
kind: Service
metadata: {{name: svc, namespace: default}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: svc-1, namespace: default, labels: {{kubernetes.io/service-name: svc}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints:
- addresses: [{address}]
  conditions: {{ready: true}}
"""


def virtual_service(n):
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bench, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{{uri: {{prefix: /bench-{n}}}}}]
    route: [{{destination: {{host: svc}}}}]
"""


class Client:
    """Asks the gateway for a path until it answers 200; a kept-alive connection."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def status(self, path):
        for _ in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                self.conn.request("GET", path, headers={"host": "bench.example.com"})
                r = self.conn.getresponse()
                r.read()
                return r.status
            except (OSError, http.client.HTTPException):
                self.conn = None
        return None

    def wait_served(self, path, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.status(path) == 200:
                return time.monotonic()
            time.sleep(0.0005)
        return None


def percentile(values, p):
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def summary(ms):
    return {"n": len(ms), "p50": statistics.median(ms), "p90": percentile(ms, 90),
            "p99": percentile(ms, 99), "max": max(ms), "min": min(ms)}


def start_proxy(args, xds_port, work, extra=()):
    port, admin = free_port(), free_port()
    p = start([args.proxy, "--xds", f"127.0.0.1:{xds_port}", "--node-id", "bench-gw",
               "--port-map", f"80={port}", "--admin-port", str(admin), "--readiness-port", "0",
               "--stats-port", "0", "--concurrency", "1", "--disable-metrics", *extra],
              os.path.join(work, "proxy.log"))
    if not wait_port(admin):
        raise RuntimeError("the proxy did not start")
    return p, port


def run_file(args, holdoff, work):
    cfg = os.path.join(work, "config")
    os.makedirs(cfg)
    up = start_upstream()
    with open(os.path.join(cfg, "base.yaml"), "w") as f:
        f.write(GATEWAY + "---\n" + service("127.0.0.1", up))
    vs_path = os.path.join(cfg, "vs.yaml")

    def save(n):
        tmp = os.path.join(cfg, ".vs.yaml.tmp")
        with open(tmp, "w") as f:
            f.write(virtual_service(n))
        os.replace(tmp, vs_path)
    save(0)
    xds, metrics = free_port(), free_port()
    op = start([args.operator, "--config-dir", cfg, "--xds-address", "127.0.0.1",
                "--xds-port", str(xds), "--metrics-address", "127.0.0.1",
                "--metrics-port", str(metrics), "--holdoff", holdoff, "--log-level", "warn"],
               os.path.join(work, "operator.log"))
    if not wait_port(xds):
        raise RuntimeError("the operator did not start")
    proxy, port = start_proxy(args, xds, work)
    client = Client(port)
    if client.wait_served("/bench-0/x") is None:
        raise RuntimeError("the first route was never served")
    times = []
    for n in range(1, args.changes + args.warmup + 1):
        t0 = time.monotonic()
        save(n)
        t1 = client.wait_served(f"/bench-{n}/x")
        if t1 is None:
            raise RuntimeError(f"change {n} was never served")
        if n > args.warmup:
            times.append((t1 - t0) * 1000.0)
    stop(proxy)
    stop(op)
    return {"from save": summary(times)}


class EventClock:
    """An independent watch on the VirtualService: when the API server sent each version
    (keyed by its prefix). The operator's own watch gets the same event at about the same
    moment, so this clock starts where kubectl's own time ends."""

    def __init__(self, kdir):
        import ssl
        import urllib.parse
        server = open(os.path.join(kdir, "kubeconfig")).read().split("server: ")[1].split()[0]
        url = urllib.parse.urlparse(server)
        ctx = ssl.create_default_context(cafile=os.path.join(kdir, "pki", "ca.crt"))
        ctx.load_cert_chain(os.path.join(kdir, "pki", "admin.crt"),
                            os.path.join(kdir, "pki", "admin.key"))
        self.conn = http.client.HTTPSConnection(url.hostname, url.port, context=ctx, timeout=600)
        self.conn.request("GET", "/apis/networking.istio.io/v1/namespaces/default/"
                          "virtualservices?watch=true&fieldSelector=metadata.name%3Dbench")
        self.resp = self.conn.getresponse()
        self.seen = {}
        self.cv = threading.Condition()
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        try:
            while True:
                line = self.resp.readline()
                if not line:
                    return
                t = time.monotonic()
                ev = json.loads(line)
                try:
                    prefix = ev["object"]["spec"]["http"][0]["match"][0]["uri"]["prefix"]
                except (KeyError, IndexError, TypeError):
                    continue
                with self.cv:
                    self.seen.setdefault(prefix, t)
                    self.cv.notify_all()
        except (OSError, ValueError, http.client.HTTPException):
            return

    def when(self, prefix, timeout=30):
        with self.cv:
            self.cv.wait_for(lambda: prefix in self.seen, timeout)
            return self.seen.get(prefix)


def run_kube(args, holdoff, work):
    kdir = os.path.join(work, "kube")
    r = subprocess.run([KUBE_ENV, "start", kdir], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError("env.sh start failed: " + r.stdout[-2000:] + r.stderr[-2000:])
    try:
        kubeconfig = os.path.join(kdir, "kubeconfig")

        def kubectl(*a, input=None):
            r = subprocess.run(["kubectl", "--kubeconfig", kubeconfig, *a], input=input,
                               capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                raise RuntimeError(f"kubectl {' '.join(a)}: {r.stdout}{r.stderr}")
            return r
        kubectl("apply", "-k", os.path.join(ROOT, "crds"))
        crdwait.wait_established(lambda *a: kubectl("get", *a).stdout, crdwait.CRDS[:2])
        up = start_upstream()
        # The API server refuses loopback endpoints: a documentation address, mapped back.
        kubectl("apply", "-f", "-", input=GATEWAY + "---\n" + service("192.0.2.10", up) +
                "---\n" + virtual_service(0))
        xds, metrics = free_port(), free_port()
        op = start([args.operator, "--kubeconfig", kubeconfig, "--xds-address", "127.0.0.1",
                    "--xds-port", str(xds), "--metrics-address", "127.0.0.1",
                    "--metrics-port", str(metrics), "--holdoff", holdoff, "--webhook-port", "0",
                    "--leader-election-namespace", "default", "--log-level", "warn"],
                   os.path.join(work, "operator.log"))
        if not wait_port(xds):
            raise RuntimeError("the operator did not start")
        proxy, port = start_proxy(args, xds, work, ["--address-map", "192.0.2.10=127.0.0.1"])
        client = Client(port)
        if client.wait_served("/bench-0/x", timeout=60) is None:
            raise RuntimeError("the first route was never served")
        events = EventClock(kdir)
        from_start, from_exit, from_event, kubectl_ms = [], [], [], []
        for n in range(1, args.changes + args.warmup + 1):
            t0 = time.monotonic()
            kubectl("apply", "-f", "-", input=virtual_service(n))
            t_exit = time.monotonic()
            t1 = client.wait_served(f"/bench-{n}/x")
            if t1 is None:
                raise RuntimeError(f"change {n} was never served")
            t_event = events.when(f"/bench-{n}")
            if t_event is None:
                raise RuntimeError(f"change {n}: no watch event")
            if n > args.warmup:
                from_start.append((t1 - t0) * 1000.0)
                from_exit.append(max(0.0, t1 - t_exit) * 1000.0)
                from_event.append((t1 - t_event) * 1000.0)
                kubectl_ms.append((t_exit - t0) * 1000.0)
        stop(proxy)
        stop(op)
        return {"from kubectl start": summary(from_start),
                "from the watch event": summary(from_event),
                "from kubectl exit": summary(from_exit),
                "kubectl itself": summary(kubectl_ms)}
    finally:
        subprocess.run([KUBE_ENV, "stop", kdir], capture_output=True, timeout=120)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--operator", default=os.path.join(ROOT, "build/release/operator/skiff-operator"))
    ap.add_argument("--proxy", default=os.path.join(ROOT, "build/release/proxy/skiff-proxy"))
    ap.add_argument("--changes", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--holdoffs", default="100ms,0s")
    ap.add_argument("--paths", default="file,kube")
    ap.add_argument("--label", default="")
    ap.add_argument("--json", default="", help="also write the results to this file")
    args = ap.parse_args()
    label = args.label or os.path.basename(os.path.dirname(os.path.abspath(args.operator)))
    results = []
    try:
        for path in args.paths.split(","):
            for holdoff in args.holdoffs.split(","):
                work = tempfile.mkdtemp(prefix=f"skiff-apply-bench-{path}-")
                log(f"{label}: {path} path, holdoff {holdoff}, {args.changes} changes")
                try:
                    run = run_file if path == "file" else run_kube
                    for clock, s in run(args, holdoff, work).items():
                        results.append({"label": label, "path": path, "holdoff": holdoff,
                                        "clock": clock, **s})
                except Exception as e:  # a setup failure: report, go on
                    log(f"{path}/{holdoff} failed: {e}; logs in {work}")
                    continue
                shutil.rmtree(work, ignore_errors=True)
    finally:
        for p in PROCS:
            if p.poll() is None:
                p.kill()
                p.wait()
    load = os.getloadavg()
    print(f"apply -> traffic ({label}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"{os.cpu_count()} cores)")
    print(f"{'path':5} {'holdoff':8} {'clock':20} {'n':>4} {'p50 ms':>8} {'p90 ms':>8} "
          f"{'p99 ms':>8} {'max ms':>8}")
    for r in results:
        print(f"{r['path']:5} {r['holdoff']:8} {r['clock']:20} {r['n']:4d} {r['p50']:8.1f} "
              f"{r['p90']:8.1f} {r['p99']:8.1f} {r['max']:8.1f}")
    goals = {("file", "100ms"): 150, ("file", "0s"): 50, ("kube", "100ms"): 250}
    for r in results:
        goal = goals.get((r["path"], r["holdoff"]))
        if goal is None or r["clock"] in ("kubectl itself", "from kubectl start",
                                          "from kubectl exit"):
            continue
        met = "met" if r["p99"] <= goal else "NOT met"
        print(f"goal: {r['path']} path, holdoff {r['holdoff']}, p99 <= {goal} ms "
              f"({r['clock']}): {met} ({r['p99']:.1f} ms)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
