#!/usr/bin/env python3
"""Operator + proxies over real gRPC on 127.0.0.1: file-source operator, xDS (state of the
world and delta), ACK/NACK, proxy-status, metrics, kill -9 of the operator under load.
Prints 'N passed, N failed'; exits non-zero on failure."""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import proxy_test as pt  # noqa: E402  (shared helpers: upstreams, raw HTTP, checks)

ARGS = None


def gateway_yaml(dest="svc-a", prefix="/"):
    return f"""apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{{uri: {{prefix: "{prefix}"}}}}]
    route: [{{destination: {{host: {dest}}}}}]
"""


def service_yaml(name, port):
    return f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports: [{{name: http, port: 80}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints:
- addresses: [127.0.0.1]
"""


class Operator:
    def __init__(self, config_dir, port=None, holdoff="0s"):
        self.dir = config_dir
        self.port = port or pt.free_port()
        self.metrics = pt.free_port()
        self.holdoff = holdoff
        self.log_path = os.path.join(tempfile.mkdtemp(prefix="skiff-op-"), "operator.log")
        self.start()

    def start(self):
        self.log = open(self.log_path, "a+")
        self.proc = subprocess.Popen(
            [os.path.join(ARGS.bin_dir, "operator/skiff-operator"), "--config-dir", self.dir,
             "--xds-address", "127.0.0.1", "--xds-port", str(self.port),
             "--metrics-address", "127.0.0.1", "--metrics-port", str(self.metrics),
             "--holdoff", self.holdoff, "--watch-interval", "100ms"],
            stdout=self.log, stderr=subprocess.STDOUT)
        pt.PROCS.append(self.proc)
        if not pt.wait_port(self.port) or not pt.wait_port(self.metrics):
            raise RuntimeError("operator did not start: " + self.logs())

    def logs(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def metric(self, name):
        body = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=5).read()
        m = re.search(rf"^{name} (\d+)$", body.decode(), re.M)
        return int(m.group(1)) if m else None

    def status(self):
        r = subprocess.run([os.path.join(ARGS.bin_dir, "cli/skiffctl"), "proxy-status",
                            "--operator", f"127.0.0.1:{self.port}"],
                           capture_output=True, text=True, timeout=20)
        return r.stdout + r.stderr

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class XdsProxy(pt.Proxy):
    def __init__(self, op_port, node_id, *extra):
        self.dir = tempfile.mkdtemp(prefix="skiff-xds-proxy-")
        self.port = pt.free_port()
        self.admin = pt.free_port()
        self.file = None
        self.log = open(os.path.join(self.dir, "proxy.log"), "w+")
        self.proc = subprocess.Popen(
            [os.path.join(ARGS.bin_dir, "proxy/skiff-proxy"), "--xds", f"127.0.0.1:{op_port}",
             "--node-id", node_id, "--port-map", f"80={self.port}", "--admin-port",
             str(self.admin), "--concurrency", "2", *extra],
            stdout=self.log, stderr=subprocess.STDOUT)
        pt.PROCS.append(self.proc)
        if not pt.wait_port(self.admin):
            raise RuntimeError("proxy did not start: " + self.logs())


def who(port, path="/"):
    try:
        s, h, b = pt.http_get(port, path)
    except OSError:
        return None
    if s != 200:
        return s
    import json
    return json.loads(b)["upstream"]


def wait_for(fn, want, timeout=10):
    deadline = time.time() + timeout
    got = None
    while time.time() < deadline:
        got = fn()
        if got == want:
            return True
        time.sleep(0.05)
    return False


def write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def scenario(up, delta):
    mode = "delta" if delta else "sotw"
    cfg = tempfile.mkdtemp(prefix="skiff-cfg-")
    write(os.path.join(cfg, "services.yaml"),
          service_yaml("svc-a", up["a"]) + "---\n" + service_yaml("svc-b", up["b"]))
    write(os.path.join(cfg, "gateway.yaml"), gateway_yaml("svc-a"))
    op = Operator(cfg)
    extra = ["--xds-delta"] if delta else []
    p1 = XdsProxy(op.port, f"gw-{mode}-1", *extra)
    p2 = XdsProxy(op.port, f"gw-{mode}-2", *extra)
    try:
        pt.check(f"{mode}: proxies get routes from the operator",
                 wait_for(lambda: who(p1.port), "a") and wait_for(lambda: who(p2.port), "a"),
                 p1.logs()[-1500:])
        st = op.status()
        pt.check(f"{mode}: proxy-status shows both proxies SYNCED",
                 st.count("SYNCED") == 10 and f"gw-{mode}-1" in st and f"gw-{mode}-2" in st, st)
        translations = op.metric("skiff_operator_translations_total")
        write(os.path.join(cfg, "gateway.yaml"), gateway_yaml("svc-b"))
        pt.check(f"{mode}: editing the YAML switches the served route",
                 wait_for(lambda: who(p1.port), "b") and wait_for(lambda: who(p2.port), "b"))
        time.sleep(0.5)
        pt.check(f"{mode}: proxies of one group share one computed snapshot",
                 op.metric("skiff_operator_translations_total") - translations == 1,
                 op.metric("skiff_operator_translations_total"))

        # An endpoint-only change sends only endpoints.
        pushes = op.metric("skiff_operator_xds_pushes_total")
        write(os.path.join(cfg, "services.yaml"),
              service_yaml("svc-a", up["a"]) + "---\n" + service_yaml("svc-b", up["a"]))
        pt.check(f"{mode}: endpoint change is served", wait_for(lambda: who(p1.port), "a"))
        time.sleep(0.5)
        sent = op.metric("skiff_operator_xds_pushes_total") - pushes
        pt.check(f"{mode}: an endpoint-only change pushes only endpoints (1 response per proxy)",
                 sent == 2, sent)
        pt.check(f"{mode}: push time and translation time histograms are exported",
                 (op.metric("skiff_operator_xds_push_time_milliseconds_count") or 0) >= 1 and
                 (op.metric("skiff_operator_translation_time_milliseconds_count") or 0) >= 1,
                 (op.metric("skiff_operator_xds_push_time_milliseconds_count"),
                  op.metric("skiff_operator_translation_time_milliseconds_count")))
        write(os.path.join(cfg, "services.yaml"),
              service_yaml("svc-a", up["a"]) + "---\n" + service_yaml("svc-b", up["b"]))
        wait_for(lambda: who(p1.port), "b")

        # A config the proxy rejects: a regex larger than the proxy's program-size limit.
        big = "/api/[a-z]{1,80}"  # valid RE2, but its program (~170) exceeds the proxy limit (100)
        rejects = op.metric("skiff_operator_xds_rejects_total")
        write(os.path.join(cfg, "gateway.yaml"),
              gateway_yaml("svc-b").replace('prefix: "/"', f'regex: "{big}"'))
        pt.check(f"{mode}: the proxy NACKs a regex it refuses",
                 wait_for(lambda: op.metric("skiff_operator_xds_rejects_total") - rejects >= 2,
                          True))
        st = op.status()
        pt.check(f"{mode}: proxy-status shows NACKED with the proxy's error",
                 "NACKED" in st and "program size" in st, st)
        pt.check(f"{mode}: the old routes keep serving", who(p1.port) == "b" and who(p2.port) == "b")
        pushes = op.metric("skiff_operator_xds_pushes_total")
        time.sleep(2.0)
        pt.check(f"{mode}: the NACKed config is not re-sent",
                 op.metric("skiff_operator_xds_pushes_total") == pushes,
                 op.metric("skiff_operator_xds_pushes_total") - pushes)
        write(os.path.join(cfg, "gateway.yaml"), gateway_yaml("svc-a"))
        pt.check(f"{mode}: a fixed config is accepted again",
                 wait_for(lambda: who(p1.port), "a") and
                 wait_for(lambda: op.status().count("SYNCED") == 10, True), op.status())

        # A broken YAML file is reported and the rest keeps working.
        write(os.path.join(cfg, "broken.yaml"), "apiVersion: v1\nkind: Service\nmetadata: {name: [\n")
        time.sleep(1.0)
        logs = op.logs()
        pt.check(f"{mode}: a broken file is reported naming file and document",
                 "broken.yaml document 1: line" in logs and who(p1.port) == "a", logs[-600:])
        os.remove(os.path.join(cfg, "broken.yaml"))

        # kill -9 of the operator under load: zero failed requests; resync on return.
        wrk = subprocess.Popen(["wrk", "-t1", "-c8", "-d6s", "--timeout", "5s",
                                f"http://127.0.0.1:{p1.port}/"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        pt.PROCS.append(wrk)
        time.sleep(1.0)
        op.kill9()
        write(os.path.join(cfg, "gateway.yaml"), gateway_yaml("svc-b"))
        time.sleep(1.5)
        op.start()
        out, _ = wrk.communicate(timeout=60)
        total = int(re.search(r"(\d+) requests in", out).group(1)) if "requests in" in out else 0
        bad = "Socket errors" in out or "Non-2xx" in out
        pt.check(f"{mode}: kill -9 of the operator under load: zero failed requests",
                 total > 500 and not bad, out)
        pt.check(f"{mode}: the proxies resync when the operator returns",
                 wait_for(lambda: who(p1.port), "b", timeout=40) and
                 wait_for(lambda: who(p2.port), "b", timeout=40), p1.logs()[-1500:])
    finally:
        p1.stop()
        p2.stop()
        op.stop()
        shutil.rmtree(cfg, ignore_errors=True)


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--only", default="")
    ARGS = ap.parse_args()
    pt.ARGS = ARGS
    try:
        up = {"a": pt.start_upstream("a"), "b": pt.start_upstream("b")}
        for delta in (False, True):
            name = "delta" if delta else "sotw"
            if ARGS.only and ARGS.only != name:
                continue
            try:
                scenario(up, delta)
            except Exception:
                pt.check(f"{name} scenario", False, traceback.format_exc())
    finally:
        for proc in pt.PROCS:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    print(f"{pt.RESULTS['passed']} passed, {pt.RESULTS['failed']} failed")
    sys.exit(1 if pt.RESULTS["failed"] else 0)


if __name__ == "__main__":
    main()
