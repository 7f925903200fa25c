#!/usr/bin/env python3
"""Observability with real components, on 127.0.0.1: Debian's Prometheus scrapes the
ingress gateway, and the queries of Istio's Service, Mesh and Workload dashboards return what
a known request mix implies; a real Zipkin server (from Maven Central, tests/observability/zipkin.sh)
receives the spans of one request through gateway -> apigateway's sidecar -> catalog with
one trace id and correct parent links.

Topology: file-source operator, gateway and sidecar skiff-proxies over xDS, the coolstore
apps. Prints 'N passed, N failed'; exits non-zero on failure."""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import coolstore_test as ct  # noqa: E402
import proxy_test as pt  # noqa: E402
import resilience_test as rt  # noqa: E402
import xds_test as xt  # noqa: E402
from proxy_test import check  # noqa: E402

ROOT = ct.ROOT

GATEWAY = """apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress-gateway, namespace: coolstore}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: apigateway, namespace: coolstore}
spec:
  hosts: ["*"]
  gateways: [ingress-gateway]
  http:
  - match: [{uri: {prefix: /fail}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
    route: [{destination: {host: apigateway, port: {number: 8080}}}]
  - match: [{uri: {prefix: /slow}}]
    fault: {delay: {fixedDelay: 300ms, percentage: {value: 100}}}
    rewrite: {uri: /api/catalog}
    route: [{destination: {host: apigateway, port: {number: 8080}}}]
  - match: [{uri: {prefix: /api}}]
    route: [{destination: {host: apigateway, port: {number: 8080}}}]
"""


def get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def wait_http(url, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            get(url, timeout=2)
            return True
        except OSError:
            time.sleep(0.25)
    return False


class Zipkin:
    def __init__(self):
        jar = subprocess.run([os.path.join(ROOT, "tests/observability/zipkin.sh")],
                             capture_output=True, text=True, check=True).stdout.strip()
        self.port = pt.free_port()
        self.dir = tempfile.mkdtemp(prefix="skiff-zipkin-")
        self.log = open(os.path.join(self.dir, "zipkin.log"), "w+")
        env = dict(os.environ, QUERY_PORT=str(self.port), STORAGE_TYPE="mem",
                   COLLECTOR_SCRIBE_ENABLED="false", QUERY_LOG_LEVEL="WARN")
        self.proc = subprocess.Popen(
            ["java", "-Xms64m", "-Xmx256m", "-XX:+UseSerialGC", "-jar", jar,
             # Zipkin's server is Armeria's: its port list says where to listen.
             "--armeria.ports[0].ip=127.0.0.1", f"--armeria.ports[0].port={self.port}",
             "--armeria.ports[0].protocols[0]=http"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        pt.PROCS.append(self.proc)
        if not wait_http(f"http://127.0.0.1:{self.port}/health", timeout=120):
            self.log.seek(0)
            raise RuntimeError("zipkin did not start: " + self.log.read()[-3000:])

    def trace(self, trace_id):
        try:
            return json.loads(get(f"http://127.0.0.1:{self.port}/api/v2/trace/{trace_id}"))
        except OSError:
            return []


class Prometheus:
    def __init__(self, target_port):
        self.port = pt.free_port()
        self.dir = tempfile.mkdtemp(prefix="skiff-prom-")
        cfg = os.path.join(self.dir, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
- job_name: skiff-gateway
  metrics_path: /stats/prometheus
  static_configs:
  - targets: ["127.0.0.1:{target_port}"]
""")
        self.log = open(os.path.join(self.dir, "prometheus.log"), "w+")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={self.dir}/data",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        pt.PROCS.append(self.proc)
        if not wait_http(f"http://127.0.0.1:{self.port}/-/ready", timeout=60):
            self.log.seek(0)
            raise RuntimeError("prometheus did not start: " + self.log.read()[-3000:])

    def query(self, q):
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
        doc = json.loads(get(url))
        res = doc.get("data", {}).get("result", [])
        if not res:
            return None
        return float(res[0]["value"][1])

    def query_all(self, q):
        """[(labels, value)] of an instant query; NaN values left out."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
        doc = json.loads(get(url))
        out = []
        for r in doc.get("data", {}).get("result", []):
            v = float(r["value"][1])
            if v == v:
                out.append((r["metric"], v))
        return out

    def targets_up(self):
        doc = json.loads(get(f"http://127.0.0.1:{self.port}/api/v1/targets"))
        return [t["health"] for t in doc["data"]["activeTargets"]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    args = ap.parse_args()
    pt.ARGS = args
    xt.ARGS = args
    try:
        run(os.path.join(args.bin_dir, "examples", "coolstore", "apps"))
    except Exception:
        check("observability", False, traceback.format_exc())
    finally:
        for proc in pt.PROCS:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    print(f"{pt.RESULTS['passed']} passed, {pt.RESULTS['failed']} failed")
    sys.exit(1 if pt.RESULTS["failed"] else 0)


def run(apps):
    zipkin = Zipkin()
    v1 = ct.App(os.path.join(apps, "coolstore-catalog"), "--version=v1")
    v2 = ct.App(os.path.join(apps, "coolstore-catalog"), "--version=v2")
    sidecar_port = pt.free_port()
    apigw = ct.App(os.path.join(apps, "coolstore-apigateway"), "--proxy",
                   f"http://127.0.0.1:{sidecar_port}")
    config = tempfile.mkdtemp(prefix="skiff-obs-")
    for name in ("catalog-destinationrule.yaml", "catalog-virtualservice.yaml", "workloads.yaml"):
        text = open(os.path.join(ct.EXAMPLE, name)).read()
        text = (text.replace("port: 18081", f"port: {apigw.port}")
                .replace("port: 18082", f"port: {v1.port}")
                .replace("port: 18083", f"port: {v2.port}"))
        xt.write(os.path.join(config, name), text)
    xt.write(os.path.join(config, "gateway.yaml"), GATEWAY)
    op = xt.Operator(config)
    zipkin_addr = f"127.0.0.1:{zipkin.port}"
    gw = xt.XdsProxy(op.port, "ingressgateway-obs", "--role", "gateway", "--zipkin-address",
                     zipkin_addr, "--trace-sampling", "100", "--stats-port", "0")
    sc = xt.XdsProxy(op.port, "apigateway-v1.coolstore", "--role", "sidecar", "--namespace",
                     "coolstore", "--labels", "app=apigateway,version=v1",
                     "--port-map", f"15001={sidecar_port}", "--zipkin-address", zipkin_addr,
                     "--trace-sampling", "100", "--stats-port", "0")
    ok = False
    for _ in range(200):
        try:
            if pt.http_get(gw.port, "/api/catalog")[0] == 200:
                ok = True
                break
        except OSError:
            pass
        time.sleep(0.1)
    check("the coolstore answers through the gateway", ok)

    # --- Tracing: one request, no incoming context.
    s, h, b = pt.http_get(gw.port, "/api/catalog", headers={"x-request-id": "obs-trace-1"})
    spans = []
    trace_id = None
    deadline = time.time() + 30
    while time.time() < deadline:
        # Find the trace by the request id tag on the gateway's span.
        try:
            q = urllib.parse.urlencode({"annotationQuery": "guid:x-request-id=obs-trace-1",
                                        "lookback": "600000", "limit": "10"})
            traces = json.loads(get(f"http://127.0.0.1:{zipkin.port}/api/v2/traces?{q}"))
        except OSError:
            traces = []
        if traces:
            trace_id = traces[0][0]["traceId"]
            spans = zipkin.trace(trace_id)
            if len(spans) >= 2:
                break
        time.sleep(0.5)
    by_service = {sp.get("localEndpoint", {}).get("serviceName"): sp for sp in spans}
    g = by_service.get("istio-ingressgateway.default")
    a = by_service.get("apigateway.coolstore")
    check("Zipkin holds the request's trace: gateway span and the apigateway sidecar's span",
          s == 200 and g is not None and a is not None and len(spans) == 2,
          json.dumps(spans)[:1500])
    if g is not None and a is not None:
        check("one trace id, 128 bits", len(trace_id) == 32 and
              g["traceId"] == a["traceId"] == trace_id, (g["traceId"], a["traceId"]))
        check("the gateway's span is the root and the sidecar's span its child",
              "parentId" not in g and a.get("parentId") == g["id"], (g, a))
        check("span names and tags",
              g["name"] == "apigateway.coolstore.svc.cluster.local:8080/*" and
              a["name"] == "catalog.coolstore.svc.cluster.local:8080/*" and
              g["tags"]["http.status_code"] == "200" and
              a["tags"]["guid:x-request-id"] == "obs-trace-1", (g["name"], a["name"], a["tags"]))

    # --- Metrics: Prometheus scrapes the gateway; a known mix of 3 good : 1 failing.
    prom = Prometheus(gw.admin)
    stop = threading.Event()
    sent = {"ok": 0, "fail": 0, "slow": 0}

    def traffic():
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        i = 0
        end = time.time() + 60
        while not stop.is_set() and time.time() < end:
            path = "/fail" if i % 4 == 3 else "/api/catalog"
            try:
                conn.request("GET", path, headers={"x-b3-sampled": "0"})
                conn.getresponse().read()
                sent["fail" if path == "/fail" else "ok"] += 1
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
            i += 1

    def slow_traffic():
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        end = time.time() + 60
        while not stop.is_set() and time.time() < end:
            try:
                conn.request("GET", "/slow", headers={"x-b3-sampled": "0"})
                conn.getresponse().read()
                sent["slow"] += 1
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)

    threads = [threading.Thread(target=traffic) for _ in range(2)] + \
        [threading.Thread(target=slow_traffic) for _ in range(2)]
    start = time.time()
    for t in threads:
        t.start()
    # Istio's service dashboard queries, on this gateway's series.
    sel = 'reporter="source",destination_service="apigateway.coolstore.svc.cluster.local"'
    volume_q = f'round(sum(irate(istio_requests_total{{{sel}}}[1m])), 0.001)'
    success_q = (f'sum(irate(istio_requests_total{{{sel},response_code!~"5.*"}}[1m])) / '
                 f'sum(irate(istio_requests_total{{{sel}}}[1m]))')
    q = ('histogram_quantile({p}, sum(irate(istio_request_duration_milliseconds_bucket'
         '{{' + sel + ',response_flags{op}"DI"}}[1m])) by (le))')
    # Istio's Mesh dashboard (global volume, success rate, 5xx, the workloads table) and
    # Workload dashboard (the apigateway workload's inbound requests, the gateway's outbound
    # requests by service), written from what those panels query.
    mesh_volume_q = 'round(sum(irate(istio_requests_total{reporter="source"}[1m])), 0.001)'
    mesh_success_q = ('sum(rate(istio_requests_total{reporter="source",response_code!~"5.*"}[1m]))'
                      ' / sum(rate(istio_requests_total{reporter="source"}[1m]))')
    mesh_5xx_q = 'sum(irate(istio_requests_total{reporter="source",response_code=~"5.*"}[1m]))'
    mesh_table_q = ('sum(rate(istio_requests_total{reporter="source",response_code="200"}[1m])) '
                    'by (destination_workload, destination_workload_namespace, destination_service)')
    mesh_p50_q = ('histogram_quantile(0.50, sum(rate(istio_request_duration_milliseconds_bucket'
                  '{reporter="source"}[1m])) by (le, destination_workload, '
                  'destination_workload_namespace))')
    wl_in_q = ('round(sum(irate(istio_requests_total{reporter="source",destination_workload_namespace='
               '"coolstore",destination_workload="apigateway-v1"}[1m])), 0.001)')
    wl_out_q = ('round(sum(irate(istio_requests_total{reporter="source",source_workload='
                '"istio-ingressgateway",source_workload_namespace="default"}[1m])) '
                'by (destination_service), 0.001)')
    volume = success = p50_slow = p99_slow = p50_fast = None
    mesh = {}
    time.sleep(6)
    deadline = time.time() + 40
    while time.time() < deadline:
        try:
            volume = prom.query(volume_q)
            success = prom.query(success_q)
            p50_slow = prom.query(q.format(p="0.50", op="="))
            p99_slow = prom.query(q.format(p="0.99", op="="))
            p50_fast = prom.query(q.format(p="0.50", op="!="))
            mesh = {"volume": prom.query(mesh_volume_q), "success": prom.query(mesh_success_q),
                    "5xx": prom.query(mesh_5xx_q), "table": prom.query_all(mesh_table_q),
                    "p50": prom.query_all(mesh_p50_q), "wl_in": prom.query(wl_in_q),
                    "wl_out": prom.query_all(wl_out_q)}
        except OSError:
            pass
        if None not in (volume, success, p50_slow, p99_slow, p50_fast) and \
                None not in mesh.values() and mesh["table"] and mesh["p50"] and mesh["wl_out"]:
            break
        time.sleep(1)
    elapsed = time.time() - start
    stop.set()
    for t in threads:
        t.join()
    client_rate = (sent["ok"] + sent["fail"] + sent["slow"]) / elapsed
    good = sent["ok"] + sent["slow"]
    expected_success = good / max(1, good + sent["fail"])
    check("Prometheus scrapes the gateway (target up)", prom.targets_up() == ["up"],
          prom.targets_up())
    check("request volume (irate) is the rate the clients sent",
          volume is not None and 0.5 * client_rate <= volume <= 2 * client_rate,
          (volume, client_rate))
    check("success rate (response_code!~\"5.*\") matches the mix",
          success is not None and abs(success - expected_success) < 0.05,
          (success, expected_success, sent))
    check("P50/P99 of the delayed route lie in the 250-500 ms bucket (300 ms delay fault)",
          p50_slow is not None and p99_slow is not None and 250 <= p50_slow <= 500 and
          250 <= p99_slow <= 500, (p50_slow, p99_slow))
    check("P50 of the other requests is far below the delay",
          p50_fast is not None and p50_fast < 250, p50_fast)
    # All of this gateway's traffic goes to apigateway, so the mesh-wide numbers are its.
    check("Mesh dashboard: global request volume is the rate the clients sent",
          mesh.get("volume") is not None and 0.5 * client_rate <= mesh["volume"] <= 2 * client_rate,
          (mesh.get("volume"), client_rate))
    check("Mesh dashboard: global success rate matches the mix",
          mesh.get("success") is not None and abs(mesh["success"] - expected_success) < 0.05,
          (mesh.get("success"), expected_success))
    fail_rate = client_rate * sent["fail"] / max(1, sum(sent.values()))
    check("Mesh dashboard: 5xx per second is the failing share of the rate",
          mesh.get("5xx") is not None and 0.5 * fail_rate <= mesh["5xx"] <= 2 * fail_rate,
          (mesh.get("5xx"), fail_rate))
    table = {(m.get("destination_workload"), m.get("destination_workload_namespace"),
              m.get("destination_service")) for m, _ in mesh.get("table") or []}
    check("Mesh dashboard: the workloads table has apigateway-v1.coolstore",
          ("apigateway-v1", "coolstore", "apigateway.coolstore.svc.cluster.local") in table, table)
    check("Mesh dashboard: a P50 per destination workload",
          any(m.get("destination_workload") == "apigateway-v1" and v > 0
              for m, v in mesh.get("p50") or []), mesh.get("p50"))
    check("Workload dashboard: apigateway-v1's inbound volume is the service's",
          mesh.get("wl_in") is not None and volume is not None and
          0.5 * volume <= mesh["wl_in"] <= 2 * volume, (mesh.get("wl_in"), volume))
    out = {m.get("destination_service"): v for m, v in mesh.get("wl_out") or []}
    check("Workload dashboard: the gateway's outbound requests, by destination service",
          list(out) == ["apigateway.coolstore.svc.cluster.local"] and
          0.5 * client_rate <= out["apigateway.coolstore.svc.cluster.local"] <= 2 * client_rate,
          (out, client_rate))


if __name__ == "__main__":
    main()
