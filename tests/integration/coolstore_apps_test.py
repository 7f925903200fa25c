#!/usr/bin/env python3
"""The coolstore demo apps (examples/coolstore/apps) as real processes on 127.0.0.1: catalog
v1/v2 (/items, /blowup chaos, /stats, access log, signals) and apigateway (direct, through a
fake sidecar that records what arrives, catalog down / failing / hanging, tracing headers;
its stock lookups over gRPC to coolstore-stock).
Prints 'N passed, N failed' and exits non-zero on failure."""
import argparse
import http.client
import http.server
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ARGS = None
RESULTS = {"passed": 0, "failed": 0}
PROCS = []  # every process this test started, stopped by pid in stop_all()
CATALOG_ERROR = "error calling Catalog service"
TRACING_HEADERS = {
    "x-request-id": "5a1c3f7e-8c2d-4b4e-9f1a-0c6d2e7b9a11",
    "x-b3-traceid": "80f198ee56343ba864fe8b2a57d3eff7",
    "x-b3-spanid": "e457b5a2e4d86bd1",
    "x-b3-parentspanid": "05e3ac9a4f6e3b90",
    "x-b3-sampled": "1",
    "x-b3-flags": "0",
    "b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
    "traceparent": "00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01",
    "tracestate": "skiff=t61rcWkgMzE",
    "x-ot-span-context": "80f198ee56343ba864fe8b2a57d3eff7;e457b5a2e4d86bd1;05e3ac9a4f6e3b90;cs",
}


def check(name, cond, detail=""):
    if cond:
        RESULTS["passed"] += 1
        print(f"ok   {name}")
    else:
        RESULTS["failed"] += 1
        print(f"FAIL {name}\n     {str(detail)[:2000]}")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port, method, path, body=None, headers=None, timeout=10):
    """One request on a new connection: (status, headers dict lower-cased, body text)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read().decode("utf-8", "replace")
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


class Proc:
    def __init__(self, name, argv):
        self.name = name
        self.out = tempfile.TemporaryFile(mode="w+")
        self.err = tempfile.TemporaryFile(mode="w+")
        self.p = subprocess.Popen(argv, stdout=self.out, stderr=self.err)
        PROCS.append(self)

    def stdout(self):
        self.out.seek(0)
        return self.out.read()

    def stderr(self):
        self.err.seek(0)
        return self.err.read()

    def stop(self, sig=signal.SIGTERM):
        """Signals the process and waits (bounded) for it; returns its exit code."""
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=10)
        return self.p.returncode


def wait_ready(proc, port):
    """Polls GET /health until 200: at most 100 tries over about 10 s."""
    deadline = time.monotonic() + 10
    for _ in range(100):
        if proc.p.poll() is not None or time.monotonic() > deadline:
            break
        try:
            if request(port, "GET", "/health", timeout=2)[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.1)
    check(f"{proc.name} becomes ready on 127.0.0.1:{port}", False,
          f"rc={proc.p.poll()} stderr={proc.stderr()}")
    return False


def start_catalog(version):
    port = free_port()
    proc = Proc(f"catalog {version}",
                [ARGS.catalog, "--port", str(port), "--version", version])
    return proc, port, wait_ready(proc, port)


def start_apigateway(catalog_url, *extra):
    port = free_port()
    proc = Proc("apigateway", [ARGS.apigateway, "--port", str(port), "--catalog-url",
                               catalog_url, *extra])
    return proc, port, wait_ready(proc, port)


def blowup(port, body):
    return request(port, "POST", "/blowup", body=body,
                   headers={"Content-Type": "application/json"})


def statuses(port, path, n):
    return [request(port, "GET", path)[0] for _ in range(n)]


class FakeSidecar:
    """An HTTP/1.1 server standing in for the app's sidecar: records each request's target and
    headers and answers with `status` and `body`."""

    def __init__(self, status=200, body="[]"):
        self.status, self.body, self.seen = status, body, []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                fake.seen.append({"target": self.path,
                                  "headers": {k.lower(): v for k, v in self.headers.items()}})
                data = fake.body.encode()
                self.send_response(fake.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class BlackHole:
    """Accepts connections and never answers (a hanging catalog)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]


def test_flags():
    for binary, name in ((ARGS.catalog, "coolstore-catalog"),
                         (ARGS.apigateway, "coolstore-apigateway")):
        r = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30)
        check(f"{name} --help exits 0 with usage", r.returncode == 0 and "Usage:" in r.stdout,
              r.stdout + r.stderr)
        r = subprocess.run([binary, "--no-such-flag"], capture_output=True, text=True, timeout=30)
        check(f"{name} --no-such-flag exits 2 naming it",
              r.returncode == 2 and "--no-such-flag" in r.stderr, f"rc={r.returncode} {r.stderr}")
    r = subprocess.run([ARGS.catalog, "--version", "v3"], capture_output=True, text=True,
                       timeout=30)
    check("coolstore-catalog --version v3 exits 2 naming the flag and value",
          r.returncode == 2 and "--version" in r.stderr and "v3" in r.stderr, r.stderr)
    r = subprocess.run([ARGS.catalog, "--version"], capture_output=True, text=True, timeout=30)
    check("coolstore-catalog bare --version prints the program version",
          r.returncode == 0 and r.stdout.startswith("coolstore-catalog "), r.stdout + r.stderr)
    for flag, value in (("--catalog-url", "ftp://catalog:21"), ("--proxy", "http://127.0.0.1:1/x"),
                        ("--proxy", "http://127.0.0.1:99999"), ("--timeout", "0s"),
                        ("--stock-address", "stock /x"), ("--stock-address", "")):
        r = subprocess.run([ARGS.apigateway, flag, value], capture_output=True, text=True,
                           timeout=30)
        check(f"coolstore-apigateway {flag} {value} exits 2 naming the flag",
              r.returncode == 2 and flag in r.stderr, f"rc={r.returncode} {r.stderr}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        proc = Proc("catalog on a busy port", [ARGS.catalog, "--port", str(s.getsockname()[1])])
        try:
            rc = proc.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            rc = None
        check("coolstore-catalog on a port in use exits 1 saying so",
              rc == 1 and "cannot listen" in proc.stderr(), f"rc={rc} {proc.stderr()}")


def test_catalog(v1, v2):
    (p1, port1), (p2, port2) = v1, v2
    status, headers, body = request(port1, "GET", "/items")
    items = json.loads(body) if status == 200 else []
    check("catalog v1 GET /items: 200, JSON array of products, x-catalog-version v1",
          status == 200 and headers.get("content-type", "").startswith("application/json") and
          headers.get("x-catalog-version") == "v1" and len(items) >= 3 and
          all({"itemId", "name", "desc", "price"} <= set(i) for i in items) and
          not any("imageUrl" in i for i in items), f"{status} {headers} {body}")
    status, headers, body = request(port2, "GET", "/items")
    items2 = json.loads(body) if status == 200 else []
    check("catalog v2 GET /items: same products with imageUrl, x-catalog-version v2",
          status == 200 and headers.get("x-catalog-version") == "v2" and
          [i["itemId"] for i in items2] == [i["itemId"] for i in items] and
          all(i.get("imageUrl", "").startswith("http") for i in items2), f"{status} {body}")
    check("catalog GET /health is 200", request(port1, "GET", "/health")[0] == 200)
    check("catalog GET /nope is 404", request(port1, "GET", "/nope")[0] == 404)
    check("catalog POST /items is 405", request(port1, "POST", "/items", body="")[0] == 405)

    log = p1.stdout()
    check("catalog logs the request line with the host header to stdout",
          f"GET /items 200 host=127.0.0.1:{port1}" in log.splitlines(), log[-500:])

    s0 = json.loads(request(port1, "GET", "/stats")[2])
    codes = statuses(port1, "/items", 5)
    s1 = json.loads(request(port1, "GET", "/stats")[2])
    check("catalog /stats counts the requests it served",
          codes == [200] * 5 and s1["requests"] - s0["requests"] == 5 and
          s1["paths"]["/items"] - s0["paths"]["/items"] == 5 and s1["errors"] == s0["errors"],
          f"{s0} {s1}")

    # Chaos: 100% -> every request fails with the chosen status.
    status, _, body = blowup(port1, '{"active":true,"type":"500","percentage":100}')
    state = json.loads(body) if status == 200 else {}
    check("catalog POST /blowup 100% 500 answers 200 with the state",
          status == 200 and state == {"active": True, "type": "500", "percentage": 100}, body)
    codes = statuses(port1, "/items", 20)
    check("blowup 100%: all of 20 requests answer 500", codes == [500] * 20, codes)
    status, _, body = blowup(port1, '{"active":true,"type":"503","percentage":100}')
    codes = statuses(port1, "/items", 5)
    check("blowup type 503: requests answer 503", status == 200 and codes == [503] * 5,
          f"{status} {body} {codes}")
    check("the other catalog (v2) is unaffected", statuses(port2, "/items", 5) == [200] * 5)

    # 50%: the share of 500s over n requests is binomial(n, 0.5); allow 5 sigma.
    n = 400
    status, _, _ = blowup(port1, '{"active":true,"type":"500","percentage":50}')
    codes = statuses(port1, "/items", n)
    fails = codes.count(500)
    sigma = math.sqrt(n * 0.25)
    check(f"blowup 50%: 500s in {n} requests within 0.5 +- 5 sigma ({fails})",
          status == 200 and set(codes) <= {200, 500} and abs(fails - n / 2) <= 5 * sigma,
          f"fails={fails} others={set(codes)}")

    for body, field in (("not json", "JSON"), ('{"active":"yes"}', '"active"'),
                        ('{"active":true,"type":"abc","percentage":50}', '"type"'),
                        ('{"active":true,"type":"200","percentage":50}', '"type"'),
                        ('{"active":true,"type":"500"}', '"percentage"'),
                        ('{"active":true,"type":"500","percentage":150}', '"percentage"'),
                        ('{"active":false,"colour":"red"}', '"colour"')):
        status, _, text = blowup(port1, body)
        check(f"blowup {body}: 400 naming {field}", status == 400 and field in text,
              f"{status} {text}")

    status, _, body = blowup(port1, '{"active":false}')
    codes = statuses(port1, "/items", 20)
    check("blowup active:false clears it: all of 20 requests answer 200",
          status == 200 and json.loads(body) == {"active": False} and codes == [200] * 20,
          f"{status} {body} {codes}")
    s2 = json.loads(request(port1, "GET", "/stats")[2])
    check("catalog /stats counts injected faults as errors",
          s2["errors"] - s1["errors"] == 25 + fails, f"{s1} {s2} fails={fails}")


def test_apigateway_direct(v1):
    p1, port1 = v1
    proc, port, ok = start_apigateway(f"http://127.0.0.1:{port1}")
    if not ok:
        return
    status, headers, body = request(port, "GET", "/api/catalog")
    expected = json.loads(request(port1, "GET", "/items")[2])
    check("apigateway GET /api/catalog returns the catalog's items as JSON",
          status == 200 and headers.get("content-type", "").startswith("application/json") and
          json.loads(body) == expected and headers.get("x-catalog-version") == "v1",
          f"{status} {headers} {body[:300]}")
    log = p1.stdout()
    check("the catalog saw the apigateway's request with the catalog's authority as host",
          f"GET /items 200 host=127.0.0.1:{port1}" in log.splitlines(), log[-500:])
    check("apigateway GET /nope is 404", request(port, "GET", "/nope")[0] == 404)

    results = []

    def worker():
        for _ in range(10):
            try:
                results.append(request(port, "GET", "/api/catalog")[0])
            except OSError as e:
                results.append(str(e))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    check("apigateway: 8 concurrent clients x 10 requests all answer 200",
          results == [200] * 80, results)

    blowup(port1, '{"active":true,"type":"500","percentage":100}')
    status, _, body = request(port, "GET", "/api/catalog")
    check("apigateway answers 500 'error calling Catalog service' when the catalog answers 500",
          status == 500 and body == CATALOG_ERROR, f"{status} {body!r}")
    blowup(port1, '{"active":false}')
    check("apigateway recovers once the catalog does",
          request(port, "GET", "/api/catalog")[0] == 200)
    check("apigateway exits 0 on SIGINT", proc.stop(signal.SIGINT) == 0, proc.stderr())

    # Catalog down: nothing listens on the port.
    proc, port, ok = start_apigateway(f"http://127.0.0.1:{free_port()}")
    if ok:
        status, _, body = request(port, "GET", "/api/catalog")
        check("apigateway answers 500 'error calling Catalog service' when the catalog is down",
              status == 500 and body == CATALOG_ERROR, f"{status} {body!r}")
        proc.stop()

    # Catalog hangs: the apigateway's --timeout ends the call.
    hole = BlackHole()
    try:
        proc, port, ok = start_apigateway(f"http://127.0.0.1:{hole.port}", "--timeout", "300ms")
        if ok:
            status, _, body = request(port, "GET", "/api/catalog", timeout=20)
            check("apigateway answers 500 'error calling Catalog service' after --timeout",
                  status == 500 and body == CATALOG_ERROR, f"{status} {body!r}")
            proc.stop()
    finally:
        hole.sock.close()


def test_apigateway_proxy():
    items = '[{"itemId":"1","name":"n","desc":"d","price":1.5}]'
    fake = FakeSidecar(body=items)
    try:
        proc, port, ok = start_apigateway("http://catalog.coolstore.svc.cluster.local:8080",
                                          "--proxy", f"http://127.0.0.1:{fake.port}")
        if not ok:
            return
        status, _, body = request(port, "GET", "/api/catalog",
                                  headers={**TRACING_HEADERS, "x-not-tracing": "secret"})
        seen = fake.seen[-1] if fake.seen else {"target": None, "headers": {}}
        check("apigateway --proxy: the response is what came back through the sidecar",
              status == 200 and json.loads(body) == json.loads(items), f"{status} {body}")
        check("apigateway --proxy: origin-form /items with Host naming the catalog",
              len(fake.seen) == 1 and seen["target"] == "/items" and
              seen["headers"].get("host") == "catalog.coolstore.svc.cluster.local:8080", seen)
        missing = {k: (v, seen["headers"].get(k)) for k, v in TRACING_HEADERS.items()
                   if seen["headers"].get(k) != v}
        check("apigateway propagates the tracing headers (x-request-id, x-b3-*, b3, "
              "traceparent, tracestate, x-ot-span-context)", not missing, missing)
        check("apigateway does not forward other inbound headers",
              "x-not-tracing" not in seen["headers"], seen["headers"])
        fake.seen.clear()
        request(port, "GET", "/api/catalog")
        check("without inbound tracing headers none are invented",
              len(fake.seen) == 1 and
              not any(k in fake.seen[0]["headers"] for k in TRACING_HEADERS), fake.seen)
        fake.status = 503
        status, _, body = request(port, "GET", "/api/catalog")
        check("apigateway answers 500 'error calling Catalog service' when the sidecar says 503",
              status == 500 and body == CATALOG_ERROR, f"{status} {body!r}")
        check("apigateway exits 0 on SIGTERM", proc.stop() == 0, proc.stderr())
    finally:
        fake.close()


def test_apigateway_stock():
    """GET /api/stock/{itemId}: a gRPC Lookup on coolstore-stock (direct here; through the
    sidecar in coolstore_test.py and mesh_test.py)."""
    sport = free_port()
    stock = Proc("stock", [ARGS.stock, "--port", str(sport), "--service-version", "v7"])
    proc, port, ok = start_apigateway("http://127.0.0.1:1", "--stock-address",
                                      f"127.0.0.1:{sport}", "--timeout", "2s")
    if not ok:
        return
    got = None
    deadline = time.monotonic() + 10
    for _ in range(100):  # the stock server may still be starting
        got = request(port, "GET", "/api/stock/item%2042")
        if got[0] == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    try:
        body = json.loads(got[2])
    except ValueError:
        body = {}
    check("apigateway GET /api/stock/ITEM: the stock service's answer over gRPC as JSON, "
          "with x-stock-version",
          got[0] == 200 and body.get("itemId") == "item 42" and body.get("version") == "v7" and
          isinstance(body.get("quantity"), int) and got[1].get("x-stock-version") == "v7", got)
    for path in ("/api/stock/", "/api/stock/a/b"):
        check(f"apigateway GET {path} is 404", request(port, "GET", path)[0] == 404)
    stock.stop()
    st, hd, body = request(port, "GET", "/api/stock/1")
    check("apigateway answers 500 'error calling Stock service' with x-grpc-status 14 "
          "(UNAVAILABLE) when stock is down",
          st == 500 and body == "error calling Stock service" and hd.get("x-grpc-status") == "14",
          (st, hd, body))
    check("apigateway exits 0 on SIGTERM with a gRPC channel open", proc.stop() == 0,
          proc.stderr())


def stop_all():
    for proc in PROCS:
        if proc.p.poll() is None:
            proc.p.kill()
            proc.p.wait(timeout=10)


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--catalog", required=True, help="path of coolstore-catalog")
    p.add_argument("--apigateway", required=True, help="path of coolstore-apigateway")
    p.add_argument("--stock", required=True, help="path of coolstore-stock")
    ARGS = p.parse_args()
    try:
        test_flags()
        c1, port1, ok1 = start_catalog("v1")
        c2, port2, ok2 = start_catalog("v2")
        if ok1 and ok2:
            test_catalog((c1, port1), (c2, port2))
            test_apigateway_direct((c1, port1))
        test_apigateway_proxy()
        test_apigateway_stock()
        check("catalog v1 exits 0 on SIGTERM", c1.stop() == 0, c1.stderr())
        check("catalog v2 exits 0 on SIGINT", c2.stop(signal.SIGINT) == 0, c2.stderr())
    finally:
        stop_all()
    print(f"{RESULTS['passed']} passed, {RESULTS['failed']} failed")
    sys.exit(1 if RESULTS["failed"] else 0)


if __name__ == "__main__":
    main()
