#!/usr/bin/env python3
"""HTTPS at the proxy with real clients (curl, openssl s_client, wrk, testssl.sh) and real
TLS backends: SIMPLE termination, SNI certificate selection, ALPN, old protocol versions
refused, MUTUAL and OPTIONAL_MUTUAL with x-forwarded-client-cert, PASSTHROUGH by SNI to a
TLS backend left unterminated, certificate rotation under load, keys never dumped, bounded
slow handshakes, upstream TLS (SIMPLE and MUTUAL), and testssl.sh with no HIGH or CRITICAL
finding. Prints 'N passed, N failed'."""
import argparse
import base64
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import proxy_test as pt  # noqa: E402
from proxy_test import check, free_port, wait_port  # noqa: E402

ARGS = None
CERTS = None
BACKEND_ID = "spiffe://cluster.local/ns/shop/sa/backend"
# A TCP listener that never accepts: the kernel completes the TCP handshake, and no TLS
# byte ever comes back.
SILENT = socket.socket()
SILENT.bind(("127.0.0.1", 0))
SILENT.listen(64)


def sh(*args, input=None, timeout=60):
    return subprocess.run(list(args), capture_output=True, text=True, input=input, timeout=timeout)


class Certs:
    """A CA, server certificates for several names, client certificates, and a second CA."""

    def __init__(self, d):
        self.d = d
        self.ca = self._ca("ca", "skiff test CA")
        self.other_ca = self._ca("other-ca", "another CA")
        self.shop = self._leaf("shop", "shop.example", ["DNS:shop.example"], self.ca)
        self.wild = self._leaf("wild", "*.b.example", ["DNS:*.b.example"], self.ca)
        self.default = self._leaf("default", "default.example", ["DNS:default.example"], self.ca)
        self.rotated = self._leaf("rotated", "shop.example", ["DNS:shop.example"], self.ca)
        self.passthrough = self._leaf("pass", "pass.example", ["DNS:pass.example"], self.ca)
        self.backend = self._leaf("backend", "backend.example",
                                  ["DNS:backend.example", "URI:" + BACKEND_ID], self.ca)
        self.client = self._leaf("client", "client-a", ["URI:spiffe://cluster.local/ns/shop/sa/a"],
                                 self.ca, client=True)
        self.stranger = self._leaf("stranger", "client-x", ["URI:spiffe://elsewhere/x"],
                                   self.other_ca, client=True)

    def _ca(self, name, cn):
        key, crt = f"{self.d}/{name}.key", f"{self.d}/{name}.crt"
        r = sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
               "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", crt, "-days",
               "800", "-subj", f"/CN={cn}")
        assert r.returncode == 0, r.stderr
        return {"key": key, "crt": crt}

    def _leaf(self, name, cn, sans, ca, client=False):
        key, csr, crt = (f"{self.d}/{name}.{x}" for x in ("key", "csr", "crt"))
        ext = f"{self.d}/{name}.ext"
        with open(ext, "w") as f:
            f.write("subjectAltName=" + ",".join(sans) + "\n")
            # Revocation information, as a real server certificate has (never fetched here).
            f.write("crlDistributionPoints=URI:http://ca.test.invalid/ca.crl\n")
            f.write("extendedKeyUsage=" + ("clientAuth" if client else "serverAuth") + "\n")
        r = sh("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
               "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={cn}")
        assert r.returncode == 0, r.stderr
        r = sh("openssl", "x509", "-req", "-in", csr, "-CA", ca["crt"], "-CAkey", ca["key"],
               "-CAcreateserial", "-out", crt, "-days", "400", "-extfile", ext)
        assert r.returncode == 0, r.stderr
        return {"key": key, "crt": crt, "cn": cn}


def secret(name, leaf=None, ca=None):
    s = {"name": name}
    if leaf:
        s["certificateChain"] = open(leaf["crt"]).read()
        s["privateKey"] = open(leaf["key"]).read()
    if ca:
        s["caCertificates"] = open(ca["crt"]).read()
    return s


def snapshot(upstream, backend_port, passthrough_port, shop_leaf=None):
    echo = "outbound|80||echo.test.svc.cluster.local"
    def routes(name):
        return {"name": name, "virtualHosts": [{"name": "vh", "domains": ["*"], "routes": [
            {"match": {"uri": {"prefix": "/to-backend-mtls"}},
             "route": {"clusters": [{"cluster": "backend-mtls", "weight": 1}]}},
            {"match": {"uri": {"prefix": "/to-backend"}},
             "route": {"clusters": [{"cluster": "backend-tls", "weight": 1}]}},
            {"match": {"uri": {"prefix": "/to-wrong-san"}},
             "route": {"clusters": [{"cluster": "backend-wrong-san", "weight": 1}]}},
            {"match": {"uri": {"prefix": "/to-silent"}},
             "route": {"clusters": [{"cluster": "backend-silent", "weight": 1}]}},
            {"match": {"uri": {"prefix": "/to-uri-san"}},
             "route": {"clusters": [{"cluster": "backend-uri-san", "weight": 1}]}},
            {"match": {"uri": {"prefix": "/to-wrong-uri"}},
             "route": {"clusters": [{"cluster": "backend-wrong-uri", "weight": 1}]}},
            {"route": {"clusters": [{"cluster": echo, "weight": 1}]}}]}]}
    c = CERTS
    return {
        "listeners": [
            {"name": "https", "address": "0.0.0.0", "port": 443, "filterChains": [
                {"name": "default", "serverNames": ["default.example"],
                 "tls": {"certificate": "kubernetes://shop/default"}, "routeTable": "https.443"},
                {"name": "shop", "serverNames": ["shop.example"],
                 "tls": {"certificate": "kubernetes://shop/shop"}, "routeTable": "https.443"},
                {"name": "wild", "serverNames": ["*.b.example"],
                 "tls": {"certificate": "kubernetes://shop/wild"}, "routeTable": "https.443"},
                {"name": "passthrough", "serverNames": ["pass.example"],
                 "sniRoutes": [{"sniHosts": ["pass.example"], "cluster": "passthrough"}]}]},
            {"name": "mtls", "address": "0.0.0.0", "port": 8443, "filterChains": [
                {"name": "mutual", "tls": {"mode": "MUTUAL", "certificate": "kubernetes://shop/shop",
                                          "caCertificate": "kubernetes://shop/ca"},
                 "routeTable": "https.443"}]},
            {"name": "optional", "address": "0.0.0.0", "port": 9443, "filterChains": [
                {"name": "optional", "tls": {"mode": "OPTIONAL_MUTUAL",
                                            "certificate": "kubernetes://shop/shop",
                                            "caCertificate": "kubernetes://shop/ca"},
                 "routeTable": "https.443"}]}],
        "routeTables": [routes("https.443")],
        "clusters": [
            {"name": echo, "service": "echo.test.svc.cluster.local", "port": 80},
            {"name": "passthrough"},
            {"name": "backend-tls", "tls": {"sni": "backend.example",
                                            "caCertificate": "kubernetes://shop/ca"}},
            {"name": "backend-mtls", "tls": {"mode": "MUTUAL", "sni": "backend.example",
                                             "certificate": "kubernetes://shop/client",
                                             "caCertificate": "kubernetes://shop/ca"}},
            {"name": "backend-wrong-san", "tls": {"sni": "backend.example",
                                                  "subjectAltNames": ["other.example"],
                                                  "caCertificate": "kubernetes://shop/ca"}},
            {"name": "backend-silent", "tls": {"sni": "backend.example",
                                               "caCertificate": "kubernetes://shop/ca"},
             "connectionPool": {"connectTimeout": "1s"}},
            {"name": "backend-uri-san", "tls": {"sni": "backend.example",
                                                "subjectAltNames": [BACKEND_ID],
                                                "caCertificate": "kubernetes://shop/ca"}},
            {"name": "backend-wrong-uri", "tls": {
                "sni": "backend.example",
                "subjectAltNames": ["spiffe://cluster.local/ns/shop/sa/other"],
                "caCertificate": "kubernetes://shop/ca"}}],
        "endpoints": [
            {"clusterName": echo, "endpoints": [{"address": "127.0.0.1", "port": upstream,
                                                 "healthy": True}]},
            {"clusterName": "passthrough", "endpoints": [{"address": "127.0.0.1",
                                                          "port": passthrough_port, "healthy": True}]},
            {"clusterName": "backend-tls", "endpoints": [{"address": "127.0.0.1",
                                                          "port": backend_port[0], "healthy": True}]},
            {"clusterName": "backend-mtls", "endpoints": [{"address": "127.0.0.1",
                                                           "port": backend_port[1], "healthy": True}]},
            {"clusterName": "backend-wrong-san", "endpoints": [{"address": "127.0.0.1",
                                                                "port": backend_port[0],
                                                                "healthy": True}]},
            {"clusterName": "backend-silent", "endpoints": [{"address": "127.0.0.1",
                                                             "port": SILENT.getsockname()[1],
                                                             "healthy": True}]},
            {"clusterName": "backend-uri-san", "endpoints": [{"address": "127.0.0.1",
                                                              "port": backend_port[0],
                                                              "healthy": True}]},
            {"clusterName": "backend-wrong-uri", "endpoints": [{"address": "127.0.0.1",
                                                                "port": backend_port[0],
                                                                "healthy": True}]}],
        "secrets": [secret("kubernetes://shop/default", c.default),
                    secret("kubernetes://shop/shop", shop_leaf or c.shop),
                    secret("kubernetes://shop/wild", c.wild),
                    secret("kubernetes://shop/client", c.client),
                    secret("kubernetes://shop/ca", ca=c.ca)],
    }


class TlsProxy:
    def __init__(self, snap, *extra):
        self.dir = tempfile.mkdtemp(prefix="skiff-tls-test-")
        self.file = os.path.join(self.dir, "snapshot.json")
        self.write(snap)
        self.ports = {443: free_port(), 8443: free_port(), 9443: free_port()}
        self.admin = free_port()
        self.log = open(os.path.join(self.dir, "proxy.log"), "w+")
        pm = ",".join(f"{k}={v}" for k, v in self.ports.items())
        self.proc = subprocess.Popen(
            [os.path.join(ARGS.bin_dir, "proxy/skiff-proxy"), "--bootstrap", self.file,
             "--port-map", pm, "--admin-port", str(self.admin), "--stats-port", "0",
             "--readiness-port", "0", "--concurrency", "2", *extra],
            stdout=self.log, stderr=subprocess.STDOUT)
        pt.PROCS.append(self.proc)
        if not all(wait_port(p) for p in self.ports.values()):
            self.log.seek(0)
            raise RuntimeError("proxy did not start: " + self.log.read())

    def write(self, snap):
        tmp = self.file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(snap, f)
        os.replace(tmp, self.file)

    def reload(self, snap):
        self.write(snap)
        self.proc.send_signal(signal.SIGHUP)

    def stats(self):
        body = pt.http_get(self.admin, "/stats")[2].decode()
        return {k: int(v) for k, v in (l.split(": ") for l in body.splitlines()) if v.isdigit()}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def curl(port, host, path="/", *extra):
    r = sh("curl", "-s", "-S", "--max-time", "10", "--cacert", CERTS.ca["crt"], "--resolve",
           f"{host}:{port}:127.0.0.1", *extra, "-w", "\n%{http_code}", f"https://{host}:{port}{path}")
    lines = r.stdout.rsplit("\n", 1)
    body = lines[0] if len(lines) == 2 else ""
    code = int(lines[-1]) if lines[-1].isdigit() else 0
    return code, body, r.stderr


def slow_reader_download(port, host, path, size, deadline_s=60):
    """GET over TLS, wait 1.5 s before reading (the proxy's socket fills), then read the
    response slowly; returns (body bytes, why) — fewer bytes than `size` if it stalled."""
    import ssl
    ctx = ssl.create_default_context(cafile=CERTS.ca["crt"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    # A small receive buffer, so the proxy's writes block early.
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s = ctx.wrap_socket(raw, server_hostname=host)
    try:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        time.sleep(1.5)
        data = b""
        end = time.monotonic() + deadline_s
        while b"\r\n\r\n" not in data and time.monotonic() < end:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        got = len(body)
        s.settimeout(10)  # a stalled proxy sends nothing more: recv times out
        while got < size and time.monotonic() < end:
            time.sleep(0.0005)  # slower than the proxy: its socket stays full to the end
            try:
                chunk = s.recv(16384)
            except socket.timeout:
                return got, f"stalled after {got} of {size} body bytes"
            if not chunk:
                return got, f"closed after {got} of {size} body bytes"
            got += len(chunk)
        return got, head[:200]
    finally:
        s.close()


def s_client(port, *args):
    r = sh("openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args, input="", timeout=20)
    return r.returncode, r.stdout + r.stderr


def subject_of(out):
    m = re.search(r"subject=.*?CN ?= ?([^\s,/]+)", out)
    return m.group(1) if m else None


def start(argv):
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    pt.PROCS.append(p)
    assert p.stdout.readline().strip() == "ready"
    return p


def main():
    global ARGS, CERTS
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--skip-testssl", action="store_true")
    ARGS = ap.parse_args()
    pt.ARGS = ARGS
    d = tempfile.mkdtemp(prefix="skiff-tls-certs-")
    try:
        CERTS = Certs(d)
        up = free_port()
        start([sys.executable, os.path.join(HERE, "hostile_upstream.py"), str(up)])
        backends = (free_port(), free_port())
        start([sys.executable, os.path.join(HERE, "tls_backend.py"), str(backends[0]), "backend",
               CERTS.backend["crt"], CERTS.backend["key"]])
        start([sys.executable, os.path.join(HERE, "tls_backend.py"), str(backends[1]),
               "backend-mtls", CERTS.backend["crt"], CERTS.backend["key"], CERTS.ca["crt"]])
        pass_port = free_port()
        start([sys.executable, os.path.join(HERE, "tls_backend.py"), str(pass_port), "passthrough",
               CERTS.passthrough["crt"], CERTS.passthrough["key"]])
        snap = snapshot(up, backends, pass_port)
        p = TlsProxy(snap, "--request-header-timeout", "2s")
        try:
            run_checks(p, snap, up, backends, pass_port)
        finally:
            p.stop()
    except Exception:
        check("tls tests", False, traceback.format_exc())
    finally:
        for proc in pt.PROCS:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    print(f"{pt.RESULTS['passed']} passed, {pt.RESULTS['failed']} failed")
    sys.exit(1 if pt.RESULTS["failed"] else 0)


def run_checks(p, snap, up, backends, pass_port):
    https = p.ports[443]
    code, body, err = curl(https, "shop.example", "/hello")
    head = json.loads(body)["head"].lower() if code == 200 else ""
    check("SIMPLE: curl over HTTPS with the CA -> 200 from the upstream", code == 200, (code, err))
    check("SIMPLE: the upstream sees x-forwarded-proto: https", "x-forwarded-proto: https" in head,
          head)

    # SNI selects the certificate: exact, wildcard, and the first chain without SNI.
    _, out = s_client(https, "-servername", "shop.example")
    check("SNI: shop.example gets its own certificate", subject_of(out) == "shop.example",
          out[-500:])
    _, out = s_client(https, "-servername", "x.b.example")
    check("SNI: x.b.example gets the wildcard certificate", subject_of(out) == "*.b.example",
          out[-500:])
    _, out = s_client(https, "-noservername")
    check("SNI: a client without SNI gets the first server's certificate",
          subject_of(out) == "default.example", out[-500:])
    rc, out = s_client(https, "-servername", "unknown.example")
    check("SNI: a name no server has is refused (no other host's certificate), as Envoy's "
          "'no matching filter chain'", subject_of(out) is None, out[-500:])
    _, out = s_client(https, "-servername", "127.0.0.1")
    check("SNI: an IP address (not a server name) is taken as no SNI: the first server",
          subject_of(out) == "default.example", out[-500:])
    _, out = s_client(https, "-servername", "shop.example", "-alpn", "h2,http/1.1")
    check("ALPN: http/1.1 is negotiated", "ALPN protocol: http/1.1" in out, out[-600:])
    got, why = slow_reader_download(https, "shop.example", "/big", 16 * 1024 * 1024)
    check("a 16 MiB response to a client that reads late arrives whole (TLS output drains)",
          got == 16 * 1024 * 1024, why)

    for flag in ("-tls1", "-tls1_1"):
        rc, out = s_client(https, "-servername", "shop.example", flag, "-cipher", "DEFAULT@SECLEVEL=0")
        check(f"protocols: {flag} is refused", rc != 0 and "Cipher is (NONE)" in out or
              "alert protocol version" in out or "no protocols available" in out, out[-600:])
    rc, out = s_client(https, "-servername", "shop.example", "-tls1_2")
    check("protocols: TLS 1.2 is accepted", rc == 0 and "TLSv1.2" in out, out[-600:])
    rc, out = s_client(https, "-servername", "shop.example", "-tls1_3")
    check("protocols: TLS 1.3 is accepted", rc == 0 and "TLSv1.3" in out, out[-600:])

    # MUTUAL.
    mtls = p.ports[8443]
    code, body, err = curl(mtls, "shop.example")
    check("MUTUAL: without a client certificate the handshake fails", code == 0, (code, err))
    code, body, err = curl(mtls, "shop.example", "/m", "--cert", CERTS.client["crt"], "--key",
                           CERTS.client["key"])
    head = json.loads(body)["head"].lower() if code == 200 else ""
    check("MUTUAL: a client certificate of the CA -> 200", code == 200, (code, err))
    xfcc = [l for l in head.split("\r\n") if l.startswith("x-forwarded-client-cert:")]
    check("MUTUAL: x-forwarded-client-cert carries the client's hash, subject and URI SAN",
          xfcc and "hash=" in xfcc[0] and "cn=client-a" in xfcc[0] and
          "uri=spiffe://cluster.local/ns/shop/sa/a" in xfcc[0], xfcc or head)
    code, body, err = curl(mtls, "shop.example", "/m", "--cert", CERTS.stranger["crt"], "--key",
                           CERTS.stranger["key"])
    check("MUTUAL: a client certificate of another CA is rejected", code == 0, (code, err))
    code, body, err = curl(mtls, "shop.example", "/m", "-H", "x-forwarded-client-cert: Hash=forged",
                           "--cert", CERTS.client["crt"], "--key", CERTS.client["key"])
    check("MUTUAL: a forged x-forwarded-client-cert from the client is replaced",
          code == 200 and "forged" not in body, body[-300:])

    opt = p.ports[9443]
    code, body, _ = curl(opt, "shop.example", "/o")
    check("OPTIONAL_MUTUAL: no certificate -> 200, no x-forwarded-client-cert",
          code == 200 and "x-forwarded-client-cert" not in body.lower(), (code, body[-300:]))
    code, body, _ = curl(opt, "shop.example", "/o", "--cert", CERTS.client["crt"], "--key",
                         CERTS.client["key"])
    check("OPTIONAL_MUTUAL: a certificate sent is verified and forwarded",
          code == 200 and "x-forwarded-client-cert" in body.lower(), (code, body[-300:]))
    code, _, _ = curl(opt, "shop.example", "/o", "--cert", CERTS.stranger["crt"], "--key",
                      CERTS.stranger["key"])
    check("OPTIONAL_MUTUAL: a certificate of another CA is rejected", code == 0, code)

    # PASSTHROUGH: the backend's own certificate, SNI intact, nothing terminated.
    code, body, err = curl(https, "pass.example", "/p")
    info = json.loads(body) if code == 200 else {}
    check("PASSTHROUGH: routed by SNI to a TLS backend, unterminated (its certificate, its SNI, "
          "no proxy headers)", info.get("server") == "passthrough" and info.get("sni") ==
          "pass.example" and "x-request-id" not in info.get("head", "").lower(), (code, err, info))
    _, out = s_client(https, "-servername", "pass.example")
    check("PASSTHROUGH: the certificate presented is the backend's", subject_of(out) ==
          "pass.example", out[-400:])

    # Upstream TLS from the cluster's tls (DestinationRule trafficPolicy.tls).
    code, body, err = curl(https, "shop.example", "/to-backend")
    info = json.loads(body) if code == 200 else {}
    check("upstream SIMPLE: the proxy calls an HTTPS backend, verifying it, with the SNI",
          info.get("server") == "backend" and info.get("sni") == "backend.example", (code, body))
    code, body, err = curl(https, "shop.example", "/to-backend-mtls")
    info = json.loads(body) if code == 200 else {}
    check("upstream MUTUAL: the proxy presents its client certificate",
          info.get("server") == "backend-mtls" and "client-a" in info.get("client_subject", ""),
          (code, body))
    code, body, err = curl(https, "shop.example", "/to-wrong-san")
    check("upstream: a backend certificate without the expected SAN is refused (503 UF)",
          code == 503, (code, body))
    started = time.time()
    code, body, err = curl(https, "shop.example", "/to-silent")
    took = time.time() - started
    check("upstream: a TLS backend that accepts TCP and never answers the handshake fails "
          "at the connect timeout (1 s) -> 503", code == 503 and took < 6,
          (code, round(took, 1), body[:200]))
    code, body, err = curl(https, "shop.example", "/to-uri-san")
    check("upstream: a SPIFFE URI subjectAltName the backend's certificate has -> 200",
          code == 200 and json.loads(body).get("server") == "backend", (code, body))
    code, body, err = curl(https, "shop.example", "/to-wrong-uri")
    check("upstream: only URI subjectAltNames, none the backend's -> refused (503 UF)",
          code == 503, (code, body))

    # Keys never leave the proxy.
    dump = pt.http_get(p.admin, "/config_dump")[2].decode()
    key_text = open(CERTS.shop["key"]).read().splitlines()[1]
    check("/config_dump redacts private keys", "[redacted]" in dump and key_text not in dump and
          "PRIVATE KEY" not in dump, dump[:300])

    # Slow handshakes are bounded: half a ClientHello, then silence.
    socks = []
    for _ in range(100):
        s = socket.create_connection(("127.0.0.1", https))
        s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        socks.append(s)
    closed = 0
    deadline = time.time() + 20
    for s in socks:
        s.settimeout(max(0.1, deadline - time.time()))
        try:
            if s.recv(10) == b"":
                closed += 1
        except (socket.timeout, ConnectionResetError):
            closed += 1 if isinstance(sys.exc_info()[1], ConnectionResetError) else 0
        s.close()
    check("slow handshakes: stalled ClientHellos are closed after the header timeout",
          closed == 100 and p.stats().get("tls_handshake_timeout", 0) >= 100, (closed, p.stats()))
    s = socket.create_connection(("127.0.0.1", https), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        got = s.recv(100)
    except ConnectionResetError:
        got = b""
    s.close()
    check("plain HTTP on the TLS port is closed, never answered in clear", got == b"", got)

    # Rotation under load: wrk over HTTPS while the certificate changes twice.
    wrk = subprocess.Popen(["wrk", "-t1", "-c8", "-d6s", "--timeout", "5s",
                            "-H", "Host: shop.example", f"https://127.0.0.1:{https}/rot"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pt.PROCS.append(wrk)
    time.sleep(1.5)
    p.reload(snapshot(up, backends, pass_port, shop_leaf=CERTS.rotated))
    rotated = False
    deadline = time.time() + 10
    while time.time() < deadline and not rotated:
        _, out = s_client(https, "-servername", "shop.example", "-showcerts")
        serial = sh("openssl", "x509", "-noout", "-serial", input=out).stdout
        want = sh("openssl", "x509", "-noout", "-serial", "-in", CERTS.rotated["crt"]).stdout
        rotated = serial and serial == want
        time.sleep(0.2)
    p.reload(snap)
    out, _ = wrk.communicate(timeout=40)
    total = int(re.search(r"(\d+) requests in", out).group(1)) if "requests in" in out else 0
    errors = [l for l in out.splitlines() if "Socket errors" in l or "Non-2xx" in l]
    check("rotation: new handshakes get the new certificate", rotated, out[-300:])
    check("rotation: zero failed requests across two rotations under load (wrk over HTTPS)",
          total > 100 and not errors, out)

    if not ARGS.skip_testssl:
        report = os.path.join(tempfile.mkdtemp(prefix="skiff-testssl-"), "testssl.json")
        r = sh("testssl", "--quiet", "--color", "0", "--warnings", "off", "--jsonfile", report,
               "--add-ca", CERTS.ca["crt"], "--ip", "127.0.0.1", f"shop.example:{https}",
               timeout=900)
        findings = json.load(open(report)) if os.path.exists(report) else []
        bad = [f for f in findings if f.get("severity") in ("HIGH", "CRITICAL")]
        summary = {}
        for f in findings:
            summary[f.get("severity")] = summary.get(f.get("severity"), 0) + 1
        print(f"     testssl.sh severities: {summary}")
        for f in findings:
            if f.get("severity") in ("MEDIUM", "LOW", "WARN"):
                print(f"     testssl.sh {f.get('severity')}: {f.get('id')}: {f.get('finding')}")
        check("testssl.sh: no finding of severity HIGH or CRITICAL", findings and not bad,
              bad or r.stdout[-1500:])


if __name__ == "__main__":
    main()
