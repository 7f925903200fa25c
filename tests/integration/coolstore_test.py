#!/usr/bin/env python3
"""The seed's story end to end, as the README tells it, with real processes on 127.0.0.1:
file-source operator on a copy of examples/coolstore, an ingress gateway and the
apigateway's sidecar (both skiff-proxy over xDS), coolstore-apigateway and catalog v1/v2.

  traffic through the gateway -> chaos 500 at 100% -> chaos 500 at 50% -> apply retries ->
  failures mostly gone -> dark launch of v2 by header -> 90/10 canary -> mirror -> faults ->
  the retry story over gRPC: apigateway's stock lookups (coolstore.v1.Stock, h2c through the
  sidecar) with chaos UNAVAILABLE at 50%, under Istio's default retries, then 4 retries

Random behaviour is checked with fixed request counts and binomial bounds, never timing
thresholds. Prints 'N passed, N failed'; exits non-zero on failure."""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import proxy_test as pt  # noqa: E402
import resilience_test as rt  # noqa: E402
import xds_test as xt  # noqa: E402
from proxy_test import check  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "coolstore")


def post_json(port, path, doc):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(doc).encode(),
                                 method="POST", headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.read()


def get_json(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.loads(r.read())


class App:
    def __init__(self, binary, *args):
        self.port = pt.free_port()
        self.log = open(os.path.join(tempfile.mkdtemp(prefix="skiff-app-"), "app.log"), "w+")
        self.proc = subprocess.Popen([binary, "--port", str(self.port), *args],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        pt.PROCS.append(self.proc)
        if not pt.wait_port(self.port):
            self.log.seek(0)
            raise RuntimeError(f"{binary} did not start: {self.log.read()}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    args = ap.parse_args()
    pt.ARGS = args
    xt.ARGS = args
    apps = os.path.join(args.bin_dir, "examples", "coolstore", "apps")
    try:
        run_story(apps)
    except Exception:
        check("coolstore story", False, traceback.format_exc())
    finally:
        for proc in pt.PROCS:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    print(f"{pt.RESULTS['passed']} passed, {pt.RESULTS['failed']} failed")
    sys.exit(1 if pt.RESULTS["failed"] else 0)


def run_story(apps):
    v1 = App(os.path.join(apps, "coolstore-catalog"), "--version=v1")
    v2 = App(os.path.join(apps, "coolstore-catalog"), "--version=v2")
    stock = App(os.path.join(apps, "coolstore-stock"), "--service-version", "v1")
    sidecar_port = pt.free_port()
    apigw = App(os.path.join(apps, "coolstore-apigateway"), "--proxy",
                f"http://127.0.0.1:{sidecar_port}")

    # The example's YAML, with the workloads' fixed ports replaced by this run's.
    config = tempfile.mkdtemp(prefix="skiff-coolstore-")
    for name in os.listdir(EXAMPLE):
        if name.endswith(".yaml"):
            text = open(os.path.join(EXAMPLE, name)).read()
            text = (text.replace("port: 18081", f"port: {apigw.port}")
                    .replace("port: 18082", f"port: {v1.port}")
                    .replace("port: 18083", f"port: {v2.port}")
                    .replace("port: 18084", f"port: {stock.port}"))
            xt.write(os.path.join(config, name), text)
    vs_file = os.path.join(config, "catalog-virtualservice.yaml")

    def apply(scenario):
        shutil.copy(os.path.join(ROOT, "examples", "coolstore-scenarios", scenario), vs_file + ".tmp")
        os.replace(vs_file + ".tmp", vs_file)

    op = xt.Operator(config)
    gw = xt.XdsProxy(op.port, "ingressgateway-test", "--role", "gateway")
    sc = xt.XdsProxy(op.port, "apigateway-v1.coolstore", "--role", "sidecar", "--namespace",
                     "coolstore", "--labels", "app=apigateway,version=v1",
                     "--port-map", f"15001={sidecar_port}")
    gw_port = gw.port

    def sidecar_snapshot():
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{sc.admin}/config_dump",
                                          timeout=5).read().decode()
        except OSError:
            return ""

    def wait_sidecar(marker, present=True):
        deadline = time.time() + 20
        while time.time() < deadline:
            if (marker in sidecar_snapshot()) == present:
                return True
            time.sleep(0.1)
        return False

    def catalog(n, headers=None):
        return rt.run_requests(gw_port, "/api/catalog", n, threads=8, headers=headers)

    def version_of(body):
        try:
            items = json.loads(body)
        except ValueError:
            return None
        return "v2" if items and all("imageUrl" in i for i in items) else "v1"

    # 0. Traffic through the gateway.
    ready = False
    for _ in range(200):
        try:
            s, h, b = pt.http_get(gw_port, "/api/catalog")
            if s == 200:
                ready = True
                break
        except OSError:
            pass
        time.sleep(0.1)
    check("gateway -> apigateway -> sidecar -> catalog v1 answers the items", ready)
    res = catalog(50)
    check("all 50 requests succeed, all from catalog v1",
          all(s == 200 and version_of(b) == "v1" for s, _, b in res), res[:1])
    s, h, b = pt.http_get(gw_port, "/other")
    check("a path no route matches is 404", s == 404, s)

    # 1. Chaos: catalog v1 fails every request.
    post_json(v1.port, "/blowup", {"active": True, "type": "500", "percentage": 100})
    res = catalog(40)
    check("chaos 500 at 100%: every call fails with the apigateway's error",
          all(s == 500 and b == b"error calling Catalog service" for s, _, b in res),
          res[:2])

    # 2. Chaos at 50%, no retries for 500 (Istio's default retries only 503).
    post_json(v1.port, "/blowup", {"active": True, "type": "500", "percentage": 50})
    n = 1000
    res = catalog(n)
    fails = sum(1 for s, _, _ in res if s != 200)
    ok, detail = rt.within(fails, n, 0.5)
    check("chaos 500 at 50% without retries: about half fail", ok, detail)

    # 3. Retries: attempts 3 on 5xx -> 0.5^4 = 6.25% fail.
    apply("1-retries.yaml")
    check("retries reach the sidecar", wait_sidecar('"numRetries": 3'))
    res = catalog(n)
    fails = sum(1 for s, _, _ in res if s != 200)
    ok, detail = rt.within(fails, n, 0.5 ** 4)
    check("with retries attempts 3: failures consistent with 0.5^4 = 6.25%", ok, detail)
    post_json(v1.port, "/blowup", {"active": False})

    # 4. Dark launch by header.
    apply("2-dark-launch.yaml")
    check("dark launch reaches the sidecar", wait_sidecar("x-dark-launch"))
    res = catalog(60, headers={"x-dark-launch": "v2"})
    check("dark launch: requests with x-dark-launch: v2 get only catalog v2",
          all(s == 200 and version_of(b) == "v2" for s, _, b in res), res[:1])
    res = catalog(60)
    check("dark launch: everyone else still gets v1",
          all(s == 200 and version_of(b) == "v1" for s, _, b in res), res[:1])

    # 5. 90/10 canary.
    apply("3-canary-90-10.yaml")
    check("canary reaches the sidecar", wait_sidecar('"weight": 10'))
    n = 1000
    res = catalog(n)
    to_v2 = sum(1 for s, _, b in res if s == 200 and version_of(b) == "v2")
    ok, detail = rt.within(to_v2, n, 0.1)
    check("90/10 canary: v2's share within binomial bounds",
          ok and all(s == 200 for s, _, _ in res), detail)

    # 6. Mirror: clients get v1, v2 receives a copy of each call.
    apply("5-mirror.yaml")
    check("mirror reaches the sidecar", wait_sidecar('"mirrors"'))
    before = get_json(v2.port, "/stats")["requests"]
    res = catalog(100)
    got = 0
    for _ in range(100):
        got = get_json(v2.port, "/stats")["requests"] - before
        if got >= 100:
            break
        time.sleep(0.05)
    check("mirror: callers are answered by v1 only",
          all(s == 200 and version_of(b) == "v1" for s, _, b in res), res[:1])
    check("mirror: v2 receives a copy of every call", got == 100, got)

    # 7. Faults: 10% aborted with 503 by the sidecar (the apigateway answers 500), half
    # delayed by 1 s.
    apply("6-fault-delay.yaml")
    check("faults reach the sidecar", wait_sidecar('"fault"'))
    n = 400
    res = rt.run_requests(gw_port, "/api/catalog", n, threads=32)
    fails = sum(1 for s, _, _ in res if s != 200)
    ok, detail = rt.within(fails, n, 0.1)
    check("abort fault 10%: share of failed calls within binomial bounds", ok, detail)
    st = sc.stats()
    delayed = st.get("fault_delays_injected", 0)
    ok, detail = rt.within(delayed, n, 0.5)
    check("delay fault 50%: share of delayed calls within binomial bounds", ok, detail)

    grpc_story(apps, gw_port, stock, sc, config, wait_sidecar)


def grpc_story(apps, gw_port, stock, sc, config, wait_sidecar):
    """8. The retry story over gRPC: apigateway looks stock up with the gRPC C++ library,
    through its sidecar (h2c, :authority stock.coolstore.svc.cluster.local:9090), which
    routes to the stock cluster as HTTP/2 (the Service port is named grpc)."""
    def lookups(n):
        return rt.run_requests(gw_port, "/api/stock/329299", n, threads=8)

    def set_chaos(spec):
        r = subprocess.run([os.path.join(apps, "coolstore-stock-client"), "--target",
                            f"127.0.0.1:{stock.port}", "--set-chaos", spec],
                           capture_output=True, text=True, timeout=30)
        return r.returncode == 0, r.stdout + r.stderr

    def body_of(b):
        try:
            return json.loads(b)
        except ValueError:
            return {}

    res = lookups(50)
    check("gRPC: gateway -> apigateway -> sidecar (h2c) -> stock v1 answers every lookup",
          all(s == 200 and h.get("x-stock-version") == "v1" and
              body_of(b).get("itemId") == "329299" for s, h, b in res), res[:2])
    ok, out = set_chaos("50:14")
    check("gRPC: stock's chaos switch set (half the lookups UNAVAILABLE)", ok, out)
    # Istio's default retries (no VirtualService for stock): 2 retries on unavailable & co.,
    # so a lookup fails when 3 tries fail: 0.5^3 = 12.5%.
    n = 1000
    res = lookups(n)
    fails = [(s, h.get("x-grpc-status")) for s, h, _ in res if s != 200]
    ok, detail = rt.within(len(fails), n, 0.5 ** 3)
    check("gRPC chaos 50% with Istio's default retries: failures consistent with 0.5^3 = 12.5%, "
          f"each a 500 naming grpc status 14 ({detail})",
          ok and all(f == (500, "14") for f in fails), (detail, fails[:3]))
    shutil.copy(os.path.join(ROOT, "examples", "coolstore-scenarios", "8-grpc-retries.yaml"),
                os.path.join(config, "stock-virtualservice.yaml.tmp"))
    os.replace(os.path.join(config, "stock-virtualservice.yaml.tmp"),
               os.path.join(config, "stock-virtualservice.yaml"))
    check("gRPC retries reach the sidecar", wait_sidecar('"numRetries": 4'))
    res = lookups(n)
    fails = sum(1 for s, _, _ in res if s != 200)
    ok, detail = rt.within(fails, n, 0.5 ** 5)
    check(f"gRPC retries attempts 4 on unavailable: failures consistent with 0.5^5 = 3.1% "
          f"({detail})", ok, detail)
    ok, out = set_chaos("0")
    check("gRPC: chaos cleared", ok, out)
    prom = urllib.request.urlopen(f"http://127.0.0.1:{sc.admin}/stats/prometheus",
                                  timeout=10).read().decode()
    grpc_lines = [ln for ln in prom.splitlines() if ln.startswith("istio_requests_total{") and
                  'destination_service="stock.coolstore.svc.cluster.local"' in ln]
    check('gRPC: the sidecar reports the stock calls with request_protocol="grpc" and '
          'grpc_response_status 0 and 14',
          grpc_lines and all('request_protocol="grpc"' in ln for ln in grpc_lines) and
          all(any(f'grpc_response_status="{c}"' in ln for ln in grpc_lines) for c in ("0", "14")),
          grpc_lines[:4])


if __name__ == "__main__":
    main()
