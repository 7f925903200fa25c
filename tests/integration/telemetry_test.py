#!/usr/bin/env python3
"""skiff-proxy telemetry with real processes: Istio's metrics in Prometheus text, the access
log (Envoy's default format and JSON), trace-context propagation (W3C, B3 multi and single)
and Zipkin v2 span reports to a collector (a small HTTP server here that records what it
is sent; tests/integration/observability_test.py uses a real Zipkin and Prometheus).
Prints 'N passed, N failed'; exits non-zero on failure."""
import argparse
import http.server
import json
import os
import re
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import proxy_test as pt  # noqa: E402
import resilience_test as rt  # noqa: E402
from proxy_test import check, route, snapshot, to  # noqa: E402


class Collector:
    """Accepts POST /api/v2/spans and keeps the spans."""

    def __init__(self):
        self.spans = []
        self.posts = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.path == "/api/v2/spans":
                    outer.spans.extend(json.loads(body))
                    outer.posts += 1
                    self.send_response(202)
                else:
                    self.send_response(404)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline and len(self.spans) < n:
            time.sleep(0.05)
        return self.spans

    def stop(self):
        self.server.shutdown()


def labelled_snapshot(up):
    snap = snapshot({("*",): [route([to("a")], match={"uri": {"prefix": "/a"}}),
                              route([to("none")], match={"uri": {"prefix": "/none"}})]},
                    {"a": [up["a"]], "none": []})
    for c in snap["clusters"]:
        c.update({"service": "catalog.shop.svc.cluster.local", "serviceName": "catalog",
                  "serviceNamespace": "shop"})
    for cla in snap["endpoints"]:
        for e in cla["endpoints"]:
            e["pod"] = "shop/catalog-v1-5d9f8c7b6d-x2x7q"
            e["labels"] = [{"name": "app", "value": "catalog"}, {"name": "version", "value": "v1"}]
    return snap


def prom(p):
    return pt.http_get(p.admin, "/stats/prometheus")[2].decode()


def sample(text, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        lbl, value = line[len(name) + 1:].rsplit("} ", 1)
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', lbl))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total


def t_metrics(up):
    p = pt.Proxy(labelled_snapshot(up), "--workload", "istio-ingressgateway")
    try:
        for _ in range(7):
            pt.http_get(p.port, "/a/x")
        for _ in range(3):
            pt.http_get(p.port, "/a/status/503")
        pt.http_get(p.port, "/nothing-routes-here")
        pt.http_get(p.port, "/none")
        text = prom(p)
        base = dict(reporter="source", destination_service="catalog.shop.svc.cluster.local",
                    destination_service_name="catalog", destination_service_namespace="shop",
                    destination_workload="catalog-v1", destination_workload_namespace="shop",
                    destination_app="catalog", destination_version="v1",
                    request_protocol="http", source_workload="istio-ingressgateway")
        check("istio_requests_total counts 200s with Istio's labels",
              sample(text, "istio_requests_total", response_code="200", response_flags="-",
                     **base) == 7, [l for l in text.splitlines() if "requests_total{" in l][:3])
        check("istio_requests_total counts upstream 503s",
              sample(text, "istio_requests_total", response_code="503", **base) == 3)
        check("no route: 404 with response_flags NR and destination unknown",
              sample(text, "istio_requests_total", response_code="404", response_flags="NR",
                     destination_service="unknown") == 1)
        check("no healthy upstream: 503 UH",
              sample(text, "istio_requests_total", response_code="503", response_flags="UH") == 1)
        le = sample(text, "istio_request_duration_milliseconds_bucket", response_code="200",
                    le="+Inf", **base)
        cnt = sample(text, "istio_request_duration_milliseconds_count", response_code="200", **base)
        check("duration histogram: +Inf bucket and count equal the requests", le == 7 and cnt == 7,
              (le, cnt))
        buckets = [l for l in text.splitlines()
                   if l.startswith("istio_request_duration_milliseconds_bucket{") and
                   'response_code="200"' in l]
        les = [re.search(r'le="([^"]+)"', l).group(1) for l in buckets]
        check("duration histogram uses Envoy's default buckets",
              les == ["0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500",
                      "5000", "10000", "30000", "60000", "300000", "600000", "1800000",
                      "3600000", "+Inf"], les)
        check("request and response size histograms are there",
              sample(text, "istio_request_bytes_count", response_code="200", **base) == 7 and
              sample(text, "istio_response_bytes_sum", response_code="200", **base) > 0)
        check("the Prometheus text has TYPE lines",
              "# TYPE istio_requests_total counter" in text and
              "# TYPE istio_request_duration_milliseconds histogram" in text)
    finally:
        p.stop()


def t_access_log(up):
    for fmt in ("text", "json"):
        log = os.path.join(pt.tempfile.mkdtemp(prefix="skiff-al-"), "access.log")
        # One worker: two would each write their own batches, and lines of requests made
        # one after another could come out of order (seen in CI).
        p = pt.Proxy(labelled_snapshot(up), "--access-log", log, "--access-log-format", fmt,
                     concurrency=1)
        try:
            pt.http_get(p.port, "/a/x?q=1", headers={"User-Agent": "tester/1",
                                                     "X-Request-Id": "rid-123",
                                                     "X-Forwarded-For": "10.1.2.3"})
            pt.http_get(p.port, "/nowhere")
            fwd = dict(json.loads(pt.http_get(p.port, "/a/gen")[2])["headers"])
        finally:
            p.stop()
        lines = open(log).read().splitlines()
        if fmt == "text":
            pat = (r'^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] "GET /a/x\?q=1 HTTP/1\.1" 200 - 0 '
                   r'\d+ \d+ \d+ "10\.1\.2\.3" "tester/1" "rid-123" "example\.com" '
                   r'"127\.0\.0\.1:\d+"$')
            check("access log: Envoy's default text format", len(lines) == 3 and
                  re.match(pat, lines[0]) is not None, lines)
            check("access log: a 404 line with NR and no upstream",
                  len(lines) == 3 and '" 404 NR 0 0 ' in lines[1] and lines[1].endswith('"-"'),
                  lines)
            # As Envoy, the request id is made before routing: a 404 has one too.
            check("access log: a request answered locally (404 NR) has a generated x-request-id",
                  len(lines) == 3 and re.search(r'"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-'
                                                r'[0-9a-f]{12}" "example\.com" "-"$', lines[1]),
                  lines[1:2])
            check("access log: a generated x-request-id is the one the upstream got",
                  len(lines) == 3 and f'"{fwd.get("x-request-id")}"' in lines[2], (fwd, lines[2:]))
        else:
            docs = [json.loads(l) for l in lines]
            d = docs[0] if docs else {}
            check("access log: JSON with Istio's keys",
                  len(docs) == 3 and d.get("method") == "GET" and d.get("path") == "/a/x?q=1" and
                  d.get("response_code") == 200 and d.get("response_flags") == "-" and
                  d.get("request_id") == "rid-123" and d.get("user_agent") == "tester/1" and
                  d.get("upstream_cluster", "").startswith("outbound|80|a|") and
                  docs[1].get("response_flags") == "NR", docs)


def t_tracing(up):
    col = Collector()
    p = pt.Proxy(labelled_snapshot(up), "--zipkin-address", f"127.0.0.1:{col.port}",
                 "--trace-sampling", "100", "--node-id", "gw-1", "--workload",
                 "istio-ingressgateway")
    try:
        def forwarded(headers):
            s, h, b = pt.http_get(p.port, "/a/x", headers=headers)
            return {k: v for k, v in json.loads(b)["headers"]}

        trace = "4bf92f3577b34da6a3ce929d0e0e4736"
        parent = "00f067aa0ba902b7"
        got = forwarded({"traceparent": f"00-{trace}-{parent}-01", "tracestate": "k=v"})
        tp = got.get("traceparent", "")
        check("W3C: the trace id is kept and a new span id is sent upstream",
              tp.startswith(f"00-{trace}-") and tp.endswith("-01") and
              tp.split("-")[2] != parent and got.get("tracestate") == "k=v", got)
        check("W3C in, B3 out: same trace, the caller's span as parent",
              got.get("x-b3-traceid") == trace and got.get("x-b3-parentspanid") == parent and
              got.get("x-b3-spanid") == tp.split("-")[2] and got.get("x-b3-sampled") == "1", got)
        spans = col.wait(1)
        sp = [s for s in spans if s["traceId"] == trace]
        check("a sampled span is reported as Zipkin v2 JSON with the right parent",
              len(sp) == 1 and sp[0]["parentId"] == parent and sp[0]["id"] == tp.split("-")[2] and
              sp[0]["kind"] == "CLIENT" and sp[0]["tags"]["http.status_code"] == "200" and
              sp[0]["name"] == "catalog.shop.svc.cluster.local:80/*" and
              sp[0]["localEndpoint"]["serviceName"] == "istio-ingressgateway.default", spans)

        b3t, b3s = "463ac35c9f6413ad48485a3953bb6124", "a2fb4a1d1a96d312"
        got = forwarded({"x-b3-traceid": b3t, "x-b3-spanid": b3s, "x-b3-sampled": "0"})
        check("B3 multi: an incoming 'not sampled' is respected and propagated",
              got.get("x-b3-traceid") == b3t and got.get("x-b3-parentspanid") == b3s and
              got.get("x-b3-sampled") == "0" and got.get("traceparent", "").endswith("-00"), got)
        got = forwarded({"b3": f"{b3t}-{b3s}-1"})
        check("B3 single header: trace and parent taken, sampled",
              got.get("x-b3-traceid") == b3t and got.get("x-b3-parentspanid") == b3s and
              got.get("x-b3-sampled") == "1" and "b3" not in got, got)
        got = forwarded({"x-request-id": "keep-me"})
        check("x-request-id is kept; a new trace gets a 128-bit id",
              got.get("x-request-id") == "keep-me" and len(got.get("x-b3-traceid", "")) == 32 and
              "x-b3-parentspanid" not in got, got)
        time.sleep(1.5)
        ids = {s["traceId"] for s in col.spans}
        check("unsampled traces are not reported; sampled ones are",
              b3t in ids and trace in ids and
              len([s for s in col.spans if s["traceId"] == b3t]) == 1, ids)
    finally:
        p.stop()
        col.stop()
    # 0% sampling: nothing reported without an incoming decision, but context propagates.
    col = Collector()
    p = pt.Proxy(labelled_snapshot(up), "--zipkin-address", f"127.0.0.1:{col.port}",
                 "--trace-sampling", "0")
    try:
        res = rt.run_requests(p.port, "/a/x", 50, threads=4)
        time.sleep(1.5)
        check("sampling 0%: no spans", all(s == 200 for s, _, _ in res) and not col.spans,
              len(col.spans))
        st = p.stats()
        check("span counters in /stats", st.get("tracing_spans_sent") == 0 and
              "tracing_spans_dropped" in st, st)
        # A client asks for a trace with x-client-trace-id (Envoy's client sampling, 100% in
        # Istio): sampled whatever the random sampling.
        s_, h_, b_ = pt.http_get(p.port, "/a/x", headers={"x-client-trace-id": "ask-1"})
        got = {k: v for k, v in json.loads(b_)["headers"]}
        spans = col.wait(1)
        check("sampling 0%: x-client-trace-id forces a sampled trace, reported",
              got.get("x-b3-sampled") == "1" and len(spans) == 1 and
              spans[0]["traceId"] == got.get("x-b3-traceid"), (got, spans))
    finally:
        p.stop()
        col.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--only", default="")
    pt.ARGS = ap.parse_args()
    try:
        up = {"a": pt.start_upstream("a")}
        for t in [t_metrics, t_access_log, t_tracing]:
            if pt.ARGS.only and pt.ARGS.only not in t.__name__:
                continue
            try:
                t(up)
            except Exception:
                check(t.__name__, False, traceback.format_exc())
    finally:
        for proc in pt.PROCS:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    print(f"{pt.RESULTS['passed']} passed, {pt.RESULTS['failed']} failed")
    sys.exit(1 if pt.RESULTS["failed"] else 0)


if __name__ == "__main__":
    main()
