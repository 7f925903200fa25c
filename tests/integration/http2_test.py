#!/usr/bin/env python3
"""HTTP/2 and gRPC through skiff-proxy with real clients on 127.0.0.1: h2spec against the h2c
listener, nghttp and h2load, curl over HTTP/2 to an HTTP/1 upstream, the gRPC C++ library
(coolstore-stock and its client) through an HTTP/2 cluster with chaos and retryOn
unavailable, abort.grpcStatus faults and local replies as gRPC errors, grpc-status in
Istio's metrics, useClientProtocol (the client's HTTP version kept upstream), a
rapid-reset flood, and 1,000 concurrent streams on one connection to a slow upstream within
a memory bound. Prints 'N passed, N failed'."""
import argparse
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import proxy_test as pt  # noqa: E402
from proxy_test import (Proxy, check, cluster_name, free_port, http_get, route,  # noqa: E402
                        snapshot, start_upstream, to, wait_port)

TOOLS = os.path.expanduser("~/.cache/skiff/tools/bin")
MEMORY_FACTOR = 1


def h2spec_binary():
    """h2spec from the Go module proxy, built once into ~/.cache/skiff/tools/bin."""
    path = os.path.join(TOOLS, "h2spec")
    if os.path.exists(path):
        return path
    if shutil.which("go") is None:
        return None
    os.makedirs(TOOLS, exist_ok=True)
    env = dict(os.environ, GOBIN=TOOLS, GOTOOLCHAIN="local")
    r = subprocess.run(["go", "install", "github.com/summerwind/h2spec/cmd/h2spec@v2.6.0"],
                       env=env, capture_output=True, text=True, timeout=1200)
    if r.returncode != 0:
        r = subprocess.run(["go", "install", "github.com/summerwind/h2spec/cmd/h2spec@latest"],
                           env=env, capture_output=True, text=True, timeout=1200)
    return path if os.path.exists(path) else None


def grpcurl_binary():
    """grpcurl from the Go module proxy, built once into ~/.cache/skiff/tools/bin."""
    path = os.path.join(TOOLS, "grpcurl")
    if os.path.exists(path):
        return path
    if shutil.which("go") is None:
        return None
    os.makedirs(TOOLS, exist_ok=True)
    env = dict(os.environ, GOBIN=TOOLS, GOTOOLCHAIN="local")
    subprocess.run(["go", "install", "github.com/fullstorydev/grpcurl/cmd/grpcurl@latest"],
                   env=env, capture_output=True, text=True, timeout=1200)
    return path if os.path.exists(path) else None


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def app(name):
    return os.path.join(pt.ARGS.bin_dir, "examples/coolstore/apps", name)


def start_stock():
    port = free_port()
    log = open(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"skiff-stock-{port}.log"), "w")
    p = subprocess.Popen([app("coolstore-stock"), "--port", str(port), "--service-version", "v1"],
                         stdout=log, stderr=subprocess.STDOUT)
    pt.PROCS.append(p)
    if not wait_port(port):
        raise RuntimeError("coolstore-stock did not start")
    return port


def stock_client(port, *args, timeout=300):
    r = subprocess.run([app("coolstore-stock-client"), "--target", f"127.0.0.1:{port}",
                        "--authority", "stock", *args], capture_output=True, text=True,
                       timeout=timeout)
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": r.stdout + r.stderr}


def grpc_snapshot(stock_port, extra_routes=()):
    snap = snapshot({("*",): list(extra_routes) + [
        {"route": {"clusters": [to("stock")],
                   "retryPolicy": {"numRetries": 3, "retryOn": ["unavailable"]}}}
    ]}, {"stock": {"ports": [stock_port], "cluster": {"protocol": "HTTP2"}},
         "empty": {"ports": [], "cluster": {"protocol": "HTTP2"}}})
    return snap


def t_h2spec(up):
    binary = h2spec_binary()
    if binary is None:
        check("h2spec: built from the Go module proxy", False, "no Go toolchain / build failed")
        return
    p = Proxy(snapshot({("*",): [route([to("a")])]}, {"a": [up]}), concurrency=1)
    try:
        r = subprocess.run([binary, "-h", "127.0.0.1", "-p", str(p.port), "-o", "5", "-j",
                            os.path.join(p.dir, "h2spec.xml")],
                           capture_output=True, text=True, timeout=600)
        m = re.search(r"(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed", r.stdout)
        check("h2spec: every case passes against the h2c listener",
              m is not None and m.group(4) == "0" and m.group(1) == m.group(2),
              (m.group(0) if m else r.stdout[-3000:]))
        if m:
            print(f"     h2spec: {m.group(0)}")
    finally:
        p.stop()


def t_clients(up):
    p = Proxy(snapshot({("*",): [route([to("a")])]}, {"a": [up]}), concurrency=1)
    try:
        # curl with prior knowledge: HTTP/2 to the client, HTTP/1.1 to the upstream.
        r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o", "-", "-w",
                            "\n%{http_version} %{http_code}", "-H", "x-test: 1", "--data-binary",
                            "hello h2", f"http://127.0.0.1:{p.port}/echo"],
                           capture_output=True, text=True, timeout=60)
        body, _, tail = r.stdout.rpartition("\n")
        seen = json.loads(body) if body.startswith("{") else {}
        fields = [str(h).lower() for h in seen.get("headers", [])]
        check("curl --http2-prior-knowledge: HTTP/2 200, the POST body reaches the HTTP/1 "
              "upstream with its headers and Host from :authority",
              tail == "2 200" and seen.get("body_bytes") == 8 and
              seen.get("version") == "HTTP/1.1" and any("x-test" in f for f in fields) and
              any(f"127.0.0.1:{p.port}" in f for f in fields if "host" in f),
              (r.stdout[-800:], r.stderr[-500:]))
        r = subprocess.run(["nghttp", "-nv", f"http://127.0.0.1:{p.port}/status/204"],
                           capture_output=True, text=True, timeout=60)
        check("nghttp: SETTINGS exchanged, :status 204",
              "recv SETTINGS frame" in r.stdout and ":status: 204" in r.stdout, r.stdout[-1500:])
        r = subprocess.run(["h2load", "-n", "2000", "-c", "4", "-m", "100",
                            f"http://127.0.0.1:{p.port}/x"], capture_output=True, text=True,
                           timeout=300)
        m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                      r"(\d+) failed", r.stdout)
        check("h2load: 2,000 requests on 4 connections, 100 streams each: all succeed",
              m is not None and m.group(4) == "2000" and m.group(5) == "0", r.stdout[-1500:])
        s = p.stats()
        check("stats: HTTP/2 connections and streams counted",
              s.get("downstream_cx_http2_total", 0) >= 6 and s.get("http2.streams_total", 0) >= 2002,
              {k: v for k, v in s.items() if "http2" in k})
        prom = http_get(p.admin, "/stats/prometheus")[2].decode()
        bad = [ln for ln in prom.splitlines() if ln and not ln.startswith("#") and
               not re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})? \S+$", ln)]
        check("/stats/prometheus: every sample line is valid exposition text (http2 counters "
              "as skiff_http2_*)", not bad and "skiff_http2_streams_total " in prom, bad[:5])
    finally:
        p.stop()


def t_grpc(_up):
    stock = start_stock()
    p = Proxy(grpc_snapshot(stock, [
        {"match": {"headers": [{"name": "x-fault", "value": {"exact": "1"}}]},
         "route": {"clusters": [to("stock")]},
         "fault": {"abort": {"grpcStatus": 14, "percentage": 100}}},
        {"match": {"headers": [{"name": "x-empty", "value": {"exact": "1"}}]},
         "route": {"clusters": [to("empty")]}}]), concurrency=1)
    try:
        r = stock_client(p.port, "--calls", "20")
        check("gRPC through skiff (h2c both ways): 20 unary calls, all OK from v1",
              r.get("codes") == {"0": 20} and r.get("versions") == {"v1": 20}, r)
        grpcurl = grpcurl_binary()
        if grpcurl is None:
            check("grpcurl: built from the Go module proxy", False, "no Go toolchain / build failed")
        else:
            # Server reflection is a bidirectional stream: it crosses the proxy too.
            ls = subprocess.run([grpcurl, "-plaintext", "-authority", "stock",
                                 f"127.0.0.1:{p.port}", "list"],
                                capture_output=True, text=True, timeout=60)
            call = subprocess.run([grpcurl, "-plaintext", "-authority", "stock", "-d",
                                   '{"item_id": "329299"}', f"127.0.0.1:{p.port}",
                                   "coolstore.v1.Stock/Lookup"],
                                  capture_output=True, text=True, timeout=60)
            reply = json.loads(call.stdout) if call.stdout.strip().startswith("{") else {}
            check("grpcurl through skiff: reflection lists coolstore.v1.Stock, Lookup answers",
                  "coolstore.v1.Stock" in ls.stdout and reply.get("itemId", reply.get("item_id")) == "329299" and
                  reply.get("version") == "v1", (ls.stdout, ls.stderr, call.stdout, call.stderr))
        r = stock_client(p.port, "--set-chaos", "50")
        check("gRPC: SetChaos through the proxy", r.get("code") == 0, r)
        n = 400
        r = stock_client(p.port, "--calls", str(n))
        failed = n - r.get("codes", {}).get("0", 0)
        # Each call fails only if 4 tries fail: p = 1/16, mean 25, sd ~4.8; 5 sd bounds.
        check(f"gRPC chaos 50 % with retryOn unavailable: {failed}/{n} calls fail, within "
              "the binomial bound of 0.5^4 (<= 50)", 1 <= failed <= 50 and
              set(r.get("codes", {})) <= {"0", "14"}, r)
        s = p.stats()
        check("the retries were counted on the cluster",
              s.get(f"cluster.{cluster_name('stock')}.upstream_rq_retry", 0) >= n // 2, s)
        stock_client(p.port, "--set-chaos", "0")
        prom = http_get(p.admin, "/stats/prometheus")[2].decode()
        ok_line = [ln for ln in prom.splitlines() if ln.startswith("istio_requests_total{") and
                   'request_protocol="grpc"' in ln and 'grpc_response_status="0"' in ln]
        bad_line = [ln for ln in prom.splitlines() if ln.startswith("istio_requests_total{") and
                    'grpc_response_status="14"' in ln and 'response_code="200"' in ln]
        check("istio_requests_total: request_protocol=\"grpc\" with grpc_response_status 0 and "
              "14 (from the trailers), response_code 200", ok_line and bad_line,
              prom[-3000:])
        # abort.grpcStatus: trailers-only UNAVAILABLE, without reaching the service.
        before = stock_client(stock, "--calls", "1")
        hdr = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-D", "-", "-o",
                              "/dev/null", "-H", "content-type: application/grpc", "-H",
                              "x-fault: 1", "-H", "te: trailers", "--data-binary", "",
                              f"http://127.0.0.1:{p.port}/coolstore.v1.Stock/Lookup"],
                             capture_output=True, text=True, timeout=60)
        head = hdr.stdout.lower()
        check("abort.grpcStatus: HTTP 200, grpc-status 14 and grpc-message in a trailers-only "
              "response", "http/2 200" in head and "grpc-status: 14" in head and
              "grpc-message: fault filter abort" in head, (hdr.stdout, hdr.stderr, before))
        hdr = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-D", "-", "-o",
                              "/dev/null", "-H", "content-type: application/grpc+proto", "-H",
                              "x-empty: 1", "--data-binary", "",
                              f"http://127.0.0.1:{p.port}/coolstore.v1.Stock/Lookup"],
                             capture_output=True, text=True, timeout=60)
        head = hdr.stdout.lower()
        check("a local reply to a gRPC client (no healthy upstream, 503) is grpc-status 14 "
              "UNAVAILABLE with HTTP 200", "http/2 200" in head and "grpc-status: 14" in head
              and "content-type: application/grpc" in head, hdr.stdout)
        hdr = subprocess.run(["curl", "-sS", "--http1.1", "-D", "-", "-o", "/dev/null", "-H",
                              "x-empty: 1", f"http://127.0.0.1:{p.port}/plain"],
                             capture_output=True, text=True, timeout=60)
        check("... while a non-gRPC client still gets the HTTP 503",
              hdr.stdout.startswith("HTTP/1.1 503"), hdr.stdout)
        # No route (404 -> 12 UNIMPLEMENTED) and no text: as Envoy, no grpc-message, and no
        # content-length in the trailers-only reply.
        hdr = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-D", "-", "-o",
                              "/dev/null", "-H", "content-type: application/grpc", "-H",
                              "te: trailers", "-H", "host: nowhere.example", "--data-binary", "",
                              f"http://127.0.0.1:{p.port}/x.Y/Z"],
                             capture_output=True, text=True, timeout=60)
        head = hdr.stdout.lower()
        check("a gRPC local reply without a text: grpc-status 12, no grpc-message, no "
              "content-length", "http/2 200" in head and "grpc-status: 12" in head and
              "grpc-message" not in head and "content-length" not in head, hdr.stdout)
    finally:
        p.stop()


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream) + payload


def goaway_code(buf):
    """The error code of the last GOAWAY (type 7) among the frames in `buf`, or None."""
    code, off = None, 0
    while off + 9 <= len(buf):
        length = int.from_bytes(buf[off:off + 3], "big")
        if buf[off + 3] == 7 and off + 9 + 8 <= len(buf):
            code = int.from_bytes(buf[off + 13:off + 17], "big")
        off += 9 + length
    return code


def read_until_closed(s, deadline):
    """What the proxy sends until it closes `s` (or 4 MiB, or the deadline); closes it."""
    buf = b""
    s.settimeout(5)
    try:
        while time.time() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            if len(buf) > 4 << 20:
                break
    except OSError:
        pass
    s.close()
    return buf


def hpack_get(authority):
    # :method GET, :scheme http, :path / (static table), :authority literal (index 1).
    return bytes([0x82, 0x86, 0x84, 0x01, len(authority)]) + authority.encode()


def t_rapid_reset(up):
    # (The requests wait in a fault delay: see t_made_you_reset.)
    p = Proxy(snapshot({("*",): [route([to("a")],
                                      fault={"delay": {"fixedDelay": "5s", "percentage": 100}})]},
                       {"a": [up]}), concurrency=1)
    try:
        base = rss_kib(p.proc.pid)
        sent = 0
        s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0))
        block = hpack_get("x")
        deadline = time.time() + 60
        try:
            for i in range(20000):
                sid = 1 + 2 * i
                s.sendall(frame(1, 0x5, sid, block) + frame(3, 0, sid, struct.pack(">I", 8)))
                sent += 1
                if time.time() > deadline:
                    break
        except OSError:
            pass
        buf = read_until_closed(s, deadline)
        goaway = goaway_code(buf)
        st = p.stats()
        grown = rss_kib(p.proc.pid) - base
        check(f"rapid reset: after {sent} HEADERS+RST_STREAM pairs the proxy sends GOAWAY "
              "ENHANCE_YOUR_CALM and closes", goaway == 0xb and
              st.get("http2.premature_reset", 0) >= 1, (goaway, sent, st))
        check(f"rapid reset: memory stays bounded (RSS grew {grown} KiB, < "
              f"{64 * MEMORY_FACTOR} MiB)", grown < 64 * 1024 * MEMORY_FACTOR, grown)
        r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w",
                            "%{http_code}", f"http://127.0.0.1:{p.port}/after"],
                           capture_output=True, text=True, timeout=60)
        check("... and serves the next client", r.stdout == "200", r.stdout + r.stderr)
    finally:
        p.stop()


class DualUpstream:
    """Answers HTTP/1.1 and prior-knowledge h2c on one port, telling in a response header
    (x-upstream-protocol) which one the request came in. A minimal HTTP/2 server: SETTINGS
    acknowledged, each stream answered once its request ends."""

    def __init__(self, big_body=0, status=200, reset=False):
        import threading
        self.reset = reset  # h2: answer each request with RST_STREAM INTERNAL_ERROR
        self.big_body = big_body  # h2 responses: this many body bytes instead of "h2"
        self.status = status      # h2 responses' :status
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.seen = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        import threading
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    @staticmethod
    def recv_exact(c, n, buf):
        while len(buf) < n:
            chunk = c.recv(65536)
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def serve(self, c):
        c.settimeout(30)
        try:
            buf = self.recv_exact(c, 4, b"")
            if buf.startswith(b"PRI "):
                self.serve_h2(c, buf)
            else:
                self.serve_h1(c, buf)
        except (OSError, EOFError):
            pass
        finally:
            c.close()

    def serve_h1(self, c, buf):
        for _ in range(1000):
            while b"\r\n\r\n" not in buf:
                chunk = c.recv(65536)
                if not chunk:
                    return
                buf += chunk
            head, _, buf = buf.partition(b"\r\n\r\n")
            self.seen.append(head.split(b"\r\n")[0].decode(errors="replace"))
            c.sendall(b"HTTP/1.1 200 OK\r\nx-upstream-protocol: http/1.1\r\n"
                      b"content-length: 2\r\n\r\nh1")

    def serve_h2(self, c, buf):
        buf = self.recv_exact(c, 24, buf)[24:]
        c.sendall(frame(4, 0, 0))
        name, value = b"x-upstream-protocol", b"h2"
        # :status 200 (static index 8; another status: a literal of that indexed name), then
        # a literal field without indexing, new name.
        status = bytes([0x88]) if self.status == 200 else \
            bytes([0x08, len(str(self.status))]) + str(self.status).encode()
        block = status + bytes([0x00, len(name)]) + name + bytes([len(value)]) + value
        windows = {"conn": 65535, "initial": 65535, "streams": {}}
        for _ in range(10000):
            buf = self.recv_exact(c, 9, buf)
            length = int.from_bytes(buf[:3], "big")
            ftype, flags = buf[3], buf[4]
            sid = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            buf = self.recv_exact(c, 9 + length, buf)
            payload, buf = buf[9:9 + length], buf[9 + length:]
            self.track(windows, ftype, flags, sid, payload)
            if ftype == 4 and not flags & 1:
                c.sendall(frame(4, 1, 0))  # SETTINGS ACK
            elif ftype == 6 and not flags & 1:
                c.sendall(frame(6, 1, 0, b"\0" * 8))  # PING ACK (payload not echoed: unused)
            elif ftype in (0, 1) and flags & 1:  # DATA or HEADERS ending the request
                self.seen.append("h2")
                if self.reset:
                    c.sendall(frame(3, 0, sid, struct.pack(">I", 2)))
                elif self.big_body:
                    buf = self.send_big(c, sid, block, buf, windows)
                else:
                    c.sendall(frame(1, 4, sid, block) + frame(0, 1, sid, b"h2"))

    @staticmethod
    def track(windows, ftype, flags, sid, payload):
        """Flow control as the proxy grants it: SETTINGS_INITIAL_WINDOW_SIZE, WINDOW_UPDATE."""
        if ftype == 4 and not flags & 1:
            for off in range(0, len(payload) - 5, 6):
                if int.from_bytes(payload[off:off + 2], "big") == 4:
                    new = int.from_bytes(payload[off + 2:off + 6], "big")
                    for k in windows["streams"]:
                        windows["streams"][k] += new - windows["initial"]
                    windows["initial"] = new
        elif ftype == 8 and len(payload) == 4:
            inc = int.from_bytes(payload, "big") & 0x7FFFFFFF
            if sid == 0:
                windows["conn"] += inc
            elif sid in windows["streams"]:
                windows["streams"][sid] += inc

    def send_big(self, c, sid, block, buf, windows):
        """big_body bytes on stream `sid` (no content-length), within the windows the proxy
        grants, END_STREAM on the last DATA frame; returns the unread input."""
        windows["streams"][sid] = windows["initial"]
        c.sendall(frame(1, 4, sid, block))
        left = self.big_body
        while left > 0:
            n = min(16384, left, windows["conn"], windows["streams"][sid])
            if n > 0:
                left -= n
                windows["conn"] -= n
                windows["streams"][sid] -= n
                c.sendall(frame(0, 1 if left == 0 else 0, sid, b"b" * n))
                continue
            buf = self.recv_exact(c, 9, buf)
            length = int.from_bytes(buf[:3], "big")
            ftype, flags = buf[3], buf[4]
            fsid = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            buf = self.recv_exact(c, 9 + length, buf)
            payload, buf = buf[9:9 + length], buf[9 + length:]
            self.track(windows, ftype, flags, fsid, payload)
            if ftype == 4 and not flags & 1:
                c.sendall(frame(4, 1, 0))
            elif ftype == 6 and not flags & 1:
                c.sendall(frame(6, 1, 0, b"\0" * 8))
        return buf

    def close(self):
        self.sock.close()


def curl_protocols(port, path, http2):
    """(client HTTP version, status, x-upstream-protocol) of a GET with curl."""
    r = subprocess.run(["curl", "-sS", "-D", "-", "-o", "/dev/null", "-w", "%{http_version}",
                        *(["--http2-prior-knowledge"] if http2 else ["--http1.1"]),
                        f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True,
                       timeout=60)
    m = re.search(r"^x-upstream-protocol: (\S+)", r.stdout, re.M | re.I)
    st = re.search(r"^HTTP/\S+ (\d+)", r.stdout, re.M)
    return (r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr,
            st.group(1) if st else None, m.group(1) if m else None)


def t_client_protocol(_up):
    """Istio's useClientProtocol (USE_DOWNSTREAM): each request goes on in the client's
    HTTP version; an HTTP2 cluster upgrades HTTP/1 clients; an HTTP1 one downgrades."""
    dual = DualUpstream()
    p = Proxy(snapshot({("*",): [
        route([to("keep")], {"uri": {"prefix": "/keep"}}),
        route([to("h2")], {"uri": {"prefix": "/h2"}}),
        route([to("h1")])]},
        {"keep": {"ports": [dual.port], "cluster": {"protocol": "USE_DOWNSTREAM"}},
         "h2": {"ports": [dual.port], "cluster": {"protocol": "HTTP2"}},
         "h1": [dual.port]}), concurrency=1)
    try:
        for path, http2, want in (("/keep", True, "h2"), ("/keep", False, "http/1.1"),
                                  ("/keep", True, "h2"), ("/h2", False, "h2"),
                                  ("/h1", True, "http/1.1")):
            got = curl_protocols(p.port, path, http2)
            check(f"{'USE_DOWNSTREAM' if path == '/keep' else path[1:].upper() + ' cluster'}: "
                  f"an HTTP/{'2' if http2 else '1.1'} client -> the upstream sees {want}",
                  got == ("2" if http2 else "1.1", "200", want), (got, dual.seen[-3:]))
        s = p.stats()
        check("USE_DOWNSTREAM: one HTTP/2 upstream connection served the h2 requests of both "
              "clusters (it is per endpoint)", s.get("upstream_cx_http2_total") == 1,
              {k: v for k, v in s.items() if "upstream_cx" in k})
    finally:
        p.stop()
        dual.close()


def t_h2_upstream_tail(_up):
    """A large response from an HTTP/2 upstream that sends only what the proxy's flow control
    grants, to an HTTP/1.1 client slower than the upstream (the proxy's output to it goes
    above its watermark, so the upstream stream is read-disabled and re-enabled many times):
    every byte and the end arrive."""
    size = 4 * 1024 * 1024  # many stream windows: the proxy's flow control paces it
    dual = DualUpstream(big_body=size)
    p = Proxy(snapshot({("*",): [route([to("h2")])]},
                       {"h2": {"ports": [dual.port], "cluster": {"protocol": "HTTP2"}}}),
              concurrency=1)
    try:
        for i in range(3):
            # A client slower than the upstream: the proxy's output to it stays above its
            # watermark, so the upstream stream is read-disabled when the end comes.
            r = subprocess.run(["curl", "-sS", "--http1.1", "--limit-rate", "4M", "-o", "-",
                                "-w", "\n%{http_code}", f"http://127.0.0.1:{p.port}/big"],
                               capture_output=True, timeout=60)
            body, _, code = r.stdout.rpartition(b"\n")
            check(f"h2 upstream paced by flow control, a slow HTTP/1.1 client: it gets all "
                  f"{size} bytes ({i + 1}/3)",
                  r.returncode == 0 and code == b"200" and len(body) == size,
                  (r.returncode, code, len(body), r.stderr[-300:]))
    finally:
        p.stop()
        dual.close()


def t_h2_upstream_end_while_paused(_up):
    """An HTTP/2 upstream sends a whole response (within its window) at once to an HTTP/2
    client with a 1 KiB stream window: the proxy's buffer for that stream fills, so the
    upstream stream is read-disabled when its END_STREAM arrives (nghttp2 closes it then);
    the held tail and the end must still reach the client."""
    size = 200 * 1024  # within the proxy's 256 KiB upstream stream window
    dual = DualUpstream(big_body=size)
    p = Proxy(snapshot({("*",): [route([to("h2")])]},
                       {"h2": {"ports": [dual.port], "cluster": {"protocol": "HTTP2"}}}),
              concurrency=1)
    try:
        for i in range(3):
            r = subprocess.run(["nghttp", "-w", "10", f"http://127.0.0.1:{p.port}/big"],
                               capture_output=True, timeout=60)
            check(f"h2 upstream ends a response while its stream is read-disabled (a slow h2 "
                  f"client): all {size} bytes arrive ({i + 1}/3)",
                  r.returncode == 0 and len(r.stdout) == size,
                  (r.returncode, len(r.stdout), r.stderr[-300:]))
    finally:
        p.stop()
        dual.close()


def nghttp_status(port, path="/", headers=()):
    """The :status an nghttp request with these (pseudo-)headers gets, or None."""
    args = ["nghttp", "-nv", "-t", "20"]
    for h in headers:
        args += ["-H", h]
    r = subprocess.run(args + [f"http://127.0.0.1:{port}{path}"], capture_output=True,
                       text=True, timeout=60)
    m = re.search(r"recv \(stream_id=\d+\) :status: (\d+)", r.stdout)
    return int(m.group(1)) if m else None


def raw_h2_status(port, authority, path):
    """One GET on a new h2c connection with this :authority and :path sent as literals: the
    response's :status when it is one of the static table's (200, 204, 206, 304, 400, 404,
    500), "reset" for RST_STREAM, "goaway", or None."""
    static = {0x88: 200, 0x89: 204, 0x8a: 206, 0x8b: 304, 0x8c: 400, 0x8d: 404, 0x8e: 500}
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) +
                  frame(1, 0x5, 1, hpack_get_path(authority, path)))
        buf = b""
        deadline = time.time() + 20
        while time.time() < deadline:
            while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
                length = int.from_bytes(buf[:3], "big")
                ftype, sid, payload = buf[3], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF, \
                    buf[9:9 + length]
                buf = buf[9 + length:]
                if ftype == 1 and sid == 1:
                    return static.get(payload[0], payload[:8])
                if ftype == 3 and sid == 1:
                    return "reset"
                if ftype == 7:
                    return "goaway"
            chunk = s.recv(65536)
            if not chunk:
                return None
            buf += chunk
        return None
    finally:
        s.close()


def t_request_target_and_authority(up):
    """What HTTP/1.1 refuses in a request target or Host is refused over HTTP/2 too: a
    fragment in :path (it would get past an exact match), an :authority with userinfo, a
    bad port or bad brackets."""
    admin = route(None, {"uri": {"exact": "/admin"}})
    admin.pop("route")
    admin["directResponse"] = {"status": 403, "body": "admin is protected"}
    p = Proxy(snapshot({("*",): [admin, route([to("a")])]}, {"a": [up]}), concurrency=1)
    try:
        check("h2: /admin -> 403 (the exact route)", nghttp_status(p.port, "/admin") == 403)
        for path in ("/admin#x", "/admin?a=1#x"):
            st = nghttp_status(p.port, headers=[f":path: {path}"])
            check(f"h2: :path {path} -> 400, not routed past the exact match", st == 400, st)
        st = nghttp_status(p.port, headers=[":authority: user@victim.example"])
        check("h2: :authority with userinfo -> 400 (as Host over HTTP/1.1)", st == 400, st)
        # (nghttp refuses to send these: raw frames.)
        for bad in ("example.com:99999", "example.com:8o", "[::1", "a:b:c", "exa mple.com"):
            st = raw_h2_status(p.port, bad, "/")
            # (a space is refused by nghttp2 itself: a stream error, which is as good)
            check(f"h2: :authority {bad!r} -> 400 (as Host over HTTP/1.1)",
                  st == 400 or (st == "reset" and " " in bad), st)
        check("h2: raw frames with a valid :authority -> 200",
              raw_h2_status(p.port, "example.com", "/") == 200)
        st = nghttp_status(p.port, headers=[":authority: example.com:8080"])
        check("h2: a valid :authority with a port is served", st == 200, st)
    finally:
        p.stop()


def t_h2_upstream_reset_and_te(up):
    """An HTTP/2 upstream that resets the stream before answering: Envoy's 503 "remote reset"
    (UR), not a connection termination; te: trailers reaches an HTTP/1.1 upstream (Envoy
    keeps it); a grpc-timeout of 0 is no deadline, not an expired one."""
    dual = DualUpstream(reset=True)
    p = Proxy(snapshot({("*",): [route([to("h2")])]},
                       {"h2": {"ports": [dual.port], "cluster": {"protocol": "HTTP2"}}}),
              concurrency=1)
    try:
        st, _, body = http_get(p.port, "/")
        check("h2 upstream RST_STREAM before the response -> 503 'reset reason: remote reset'",
              st == 503 and body.endswith(b"reset reason: remote reset"), (st, body))
    finally:
        p.stop()
        dual.close()
    timed = route([to("a")], match={"uri": {"prefix": "/timed"}})
    timed["route"]["timeout"] = "1s"
    p = Proxy(snapshot({("*",): [timed, route([to("a")])]}, {"a": [up]}), concurrency=1)
    try:
        r = subprocess.run(["curl", "-sS", "--http1.1", "-H", "TE: trailers", "-o", "-",
                            f"http://127.0.0.1:{p.port}/echo"], capture_output=True, text=True,
                           timeout=60)
        seen = json.loads(r.stdout) if r.stdout.startswith("{") else {}
        fields = [str(h).lower() for h in seen.get("headers", [])]
        check("te: trailers is kept to an HTTP/1.1 upstream", any("'te', 'trailers'" in f or
              "te: trailers" in f for f in fields), (r.stdout[-600:], r.stderr))
        for path in ("/timed/delay/300", "/delay/300"):
            r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-D", "-", "-o",
                                "/dev/null", "-H", "content-type: application/grpc", "-H",
                                "grpc-timeout: 0m", "--data-binary", "",
                                f"http://127.0.0.1:{p.port}{path}"],
                               capture_output=True, text=True, timeout=60)
            head = r.stdout.lower()
            check(f"grpc-timeout 0m on {path} is no deadline: the upstream answers",
                  "http/2 200" in head and "grpc-status: 14" not in head, r.stdout)
    finally:
        p.stop()


def t_h2_upstream_status_range(_up):
    """An HTTP/2 upstream's :status outside 100..599 (RFC 9110 15) is a bad response: 502,
    as from an HTTP/1.1 upstream."""
    for status, want in ((599, 599), (600, 502), (999, 502)):
        dual = DualUpstream(status=status)
        p = Proxy(snapshot({("*",): [route([to("h2")])]},
                           {"h2": {"ports": [dual.port], "cluster": {"protocol": "HTTP2"}}}),
                  concurrency=1)
        try:
            st = http_get(p.port, "/")[0]
            check(f"h2 upstream :status {status} -> {want} to the client", st == want, st)
        finally:
            p.stop()
            dual.close()


def hpack_get_path(authority, path):
    # :method GET, :scheme http (static table), :path and :authority literals.
    return (bytes([0x82, 0x86, 0x04, len(path)]) + path.encode() +
            bytes([0x01, len(authority)]) + authority.encode())


def t_connection_error_with_streams(up):
    """A connection error while a stream waits on its upstream: GOAWAY, the stream is reset
    and the connection closes at once (it used to stay open for as long as the upstream
    took, or for ever, since nghttp2 reports nothing more for a terminated session)."""
    p = Proxy(snapshot({("*",): [route([to("a")])]}, {"a": [up]}), concurrency=1)
    try:
        s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) +
                  frame(1, 0x5, 1, hpack_get_path("x", "/delay/30000")))
        time.sleep(0.5)  # the request reaches the upstream, which waits 30 s
        started = time.time()
        s.sendall(frame(0, 0, 0, b"x"))  # DATA on stream 0: a connection error
        buf, closed = b"", False
        s.settimeout(1)
        while time.time() - started < 15:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            buf += chunk
        took = time.time() - started
        s.close()
        goaway = goaway_code(buf)
        check("connection error with a stream waiting upstream: GOAWAY PROTOCOL_ERROR, then "
              "the connection closes (not when the upstream answers)",
              goaway == 1 and closed and took < 10, (goaway, closed, round(took, 1)))
        r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w",
                            "%{http_code}", f"http://127.0.0.1:{p.port}/after"],
                           capture_output=True, text=True, timeout=60)
        check("... and serves the next client", r.stdout == "200", r.stdout + r.stderr)
    finally:
        p.stop()


def t_made_you_reset(up):
    """MadeYouReset (CVE-2025-8671): the client makes the proxy reset each stream itself (a
    WINDOW_UPDATE that overflows the stream's window, right after the request) instead of
    sending RST_STREAM; counted as rapid reset all the same. The requests wait in a fault
    delay, not on the upstream: a stream answered before its WINDOW_UPDATE is read (a 503
    when connecting fails at once, as it can with the loopback's ports held by the earlier
    tests' TIME_WAITs on a loaded machine) is complete, not prematurely reset, and rightly
    not counted."""
    p = Proxy(snapshot({("*",): [route([to("a")],
                                      fault={"delay": {"fixedDelay": "5s", "percentage": 100}})]},
                       {"a": [up]}), concurrency=1)
    try:
        s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0))
        block = hpack_get_path("x", "/delay/2000")
        sent = 0
        deadline = time.time() + 60
        try:
            for i in range(5000):
                sid = 1 + 2 * i
                s.sendall(frame(1, 0x5, sid, block) +
                          frame(8, 0, sid, struct.pack(">I", 0x7FFFFFFF)))
                sent += 1
                if time.time() > deadline:
                    break
        except OSError:
            pass
        buf = read_until_closed(s, deadline)
        goaway = goaway_code(buf)
        st = p.stats()
        check(f"MadeYouReset: after {sent} requests each reset by the proxy for a window "
              "overflow, GOAWAY ENHANCE_YOUR_CALM", goaway == 0xb and
              st.get("http2.premature_reset", 0) >= 1, (goaway, sent, st))
    finally:
        p.stop()


def t_empty_and_priority_floods(up):
    """Floods that cost the proxy work but carry nothing (CVE-2019-9518 empty frames,
    CVE-2019-9513-style PRIORITY churn): as Envoy's defaults, a second consecutive empty
    DATA/HEADERS/CONTINUATION frame without END_STREAM, or more than 100 PRIORITY frames per
    opened stream, is a flood: GOAWAY ENHANCE_YOUR_CALM. One empty DATA frame is fine."""
    p = Proxy(snapshot({("*",): [route([to("a")])]}, {"a": [up]}), concurrency=1)
    post = bytes([0x83, 0x86, 0x84, 0x01, 1]) + b"x"  # POST / (a body follows)
    try:
        s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) +
                  frame(1, 0x4, 1, post) + frame(0, 0, 1) + frame(0, 1, 1, b"body"))
        buf, status, deadline = b"", None, time.time() + 20
        while status is None and time.time() < deadline:
            try:
                chunk = s.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            off = 0
            while off + 9 <= len(buf) and off + 9 + int.from_bytes(buf[off:off + 3], "big") <= len(buf):
                length = int.from_bytes(buf[off:off + 3], "big")
                if buf[off + 3] == 1 and int.from_bytes(buf[off + 5:off + 9], "big") == 1:
                    status = buf[off + 9]  # 0x88: :status 200 from the static table
                off += 9 + length
        s.close()
        check("h2: one empty DATA frame before the body is served (200, no GOAWAY)",
              goaway_code(buf) is None and status == 0x88, (status, buf[:200]))
        for name, flood in (
                ("200 empty DATA frames", frame(1, 0x4, 1, post) + frame(0, 0, 1) * 200),
                ("5,000 PRIORITY frames", b"".join(
                    frame(2, 0, 1 + 2 * (i % 50), struct.pack(">IB", 0, 15)) for i in range(5000)))):
            before = p.stats().get("http2.flood", 0)
            s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
            try:
                s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) + flood)
            except OSError:
                pass
            buf = read_until_closed(s, time.time() + 20)
            after = p.stats().get("http2.flood", 0)
            check(f"h2: {name} -> GOAWAY ENHANCE_YOUR_CALM, counted as a flood",
                  goaway_code(buf) == 0xb and after == before + 1, (goaway_code(buf), before, after))
    finally:
        p.stop()


def t_many_streams(up):
    p = Proxy(snapshot({("*",): [route([to("a")])]}, {"a": [up]}),
              "--http2-max-concurrent-streams", "1000", concurrency=1)
    try:
        base = rss_kib(p.proc.pid)
        peak = [base]
        h = subprocess.Popen(["h2load", "-n", "1000", "-c", "1", "-m", "1000",
                              f"http://127.0.0.1:{p.port}/delay/1500"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 300
        while h.poll() is None and time.time() < deadline:
            peak[0] = max(peak[0], rss_kib(p.proc.pid))
            time.sleep(0.05)
        if h.poll() is None:
            h.kill()
        out = h.communicate()[0]
        m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded", out)
        grown = peak[0] - base
        check("1,000 concurrent streams on one connection to a slow upstream: all succeed",
              m is not None and m.group(4) == "1000", out[-1500:])
        check(f"... within a memory bound (peak RSS grew {grown} KiB, < {96 * MEMORY_FACTOR} "
              "MiB: about 100 KiB per stream at most)", grown < 96 * 1024 * MEMORY_FACTOR, grown)
    finally:
        p.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--only", default="")
    pt.ARGS = ap.parse_args()
    # Under AddressSanitizer freed memory waits in a quarantine (256 MB by default) and
    # every allocation has redzones: a small quarantine, and the memory bounds doubled.
    os.environ["ASAN_OPTIONS"] = (os.environ.get("ASAN_OPTIONS", "") +
                                  ":quarantine_size_mb=8").lstrip(":")
    global MEMORY_FACTOR
    MEMORY_FACTOR = 2 if "asan" in os.path.basename(os.path.normpath(pt.ARGS.bin_dir)) else 1
    for tool in ("curl", "nghttp", "h2load"):
        if shutil.which(tool) is None:
            print(f"SKIPPED: {tool} is missing (scripts/bootstrap.sh --with-test-tools)")
            sys.exit(77)
    try:
        up = start_upstream("h1")
        for t in (t_h2spec, t_clients, t_client_protocol, t_grpc, t_rapid_reset,
                  t_connection_error_with_streams, t_made_you_reset, t_h2_upstream_tail,
                  t_request_target_and_authority, t_h2_upstream_status_range,
                  t_h2_upstream_reset_and_te,
                  t_empty_and_priority_floods,
                  t_h2_upstream_end_while_paused,
                  t_many_streams):
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
