#!/usr/bin/env python3
"""HTTPS at the gateway through the operator: Gateway, VirtualService and Secret manifests in
a --config-dir, the operator translating them and serving the proxy over xDS (Secrets as
their own resource type), real clients (curl, openssl s_client, wrk over HTTPS, testssl.sh).
SIMPLE from a kubernetes.io/tls Secret, SNI selection (exact, wildcard, none -> first
server), MUTUAL from Istio's generic Secret form, PASSTHROUGH to a TLS backend by SNI,
httpsRedirect, upstream TLS from a DestinationRule, a missing Secret (status names the
field, the other servers keep working) that then appears, rotation of a Secret file under
load without dropping established connections, Secrets only to the proxies whose Gateways
name them, and no private key in /config_dump, skiffctl translate or the logs.
Prints 'N passed, N failed'."""
import argparse
import base64
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import proxy_test as pt  # noqa: E402
import tls_test as tt  # noqa: E402  (certificates, curl, s_client)
import xds_test as xt  # noqa: E402  (the file-source operator)
from proxy_test import check, free_port, wait_port  # noqa: E402

ARGS = None


def wait_until(fn, timeout=30, step=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            v = fn()
        except Exception:  # a port that is not bound yet, a proxy mid-restart
            v = None
        if v:
            return v
        time.sleep(step)
    return None


def tls_secret(name, leaf, ca=None):
    b64 = lambda p: base64.b64encode(open(p, "rb").read()).decode()  # noqa: E731
    data = {"tls.crt": b64(leaf["crt"]), "tls.key": b64(leaf["key"])}
    if ca:
        data["ca.crt"] = b64(ca["crt"])
    return json.dumps({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                       "metadata": {"name": name, "namespace": "shop"}, "data": data})


def generic_secret(name, leaf, ca):
    # Istio's generic form, as stringData (as kubectl would apply it).
    return json.dumps({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                       "metadata": {"name": name, "namespace": "shop"},
                       "stringData": {"cert": open(leaf["crt"]).read(),
                                      "key": open(leaf["key"]).read(),
                                      "cacert": open(ca["crt"]).read()}})


def config(up, backend, pass_port, mtls_backend, pass_b):
    return f"""apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: shop}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https-default, protocol: HTTPS}}
    hosts: [default.example]
    tls: {{mode: SIMPLE, credentialName: default-cert}}
  - port: {{number: 443, name: https-shop, protocol: HTTPS}}
    hosts: [shop.example]
    tls: {{mode: SIMPLE, credentialName: shop-cert}}
  - port: {{number: 443, name: https-wild, protocol: HTTPS}}
    hosts: ["*.b.example"]
    tls: {{mode: SIMPLE, credentialName: wild-cert}}
  - port: {{number: 443, name: https-late, protocol: HTTPS}}
    hosts: [late.example]
    tls: {{mode: SIMPLE, credentialName: late-cert}}
  - port: {{number: 443, name: tls-pass, protocol: TLS}}
    hosts: [pass.example]
    tls: {{mode: PASSTHROUGH}}
  - port: {{number: 8443, name: https-mtls, protocol: HTTPS}}
    hosts: [shop.example]
    tls:
      mode: MUTUAL
      credentialName: mtls-cert
      subjectAltNames: [spiffe://cluster.local/ns/shop/sa/a]
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [shop.example]
    tls: {{httpsRedirect: true}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: shop}}
spec:
  hosts: [default.example, shop.example, "*.b.example", late.example]
  gateways: [gw]
  http:
  - match: [{{uri: {{prefix: /to-backend-mtls}}}}]
    route: [{{destination: {{host: backend-mtls}}}}]
  - match: [{{uri: {{prefix: /to-backend}}}}]
    route: [{{destination: {{host: backend}}}}]
  - route: [{{destination: {{host: echo}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: pass, namespace: shop}}
spec:
  hosts: [pass.example]
  gateways: [gw]
  tls:
  - match: [{{sniHosts: [pass.example]}}]
    route:
    - {{destination: {{host: passthrough}}, weight: 50}}
    - {{destination: {{host: passthrough-b}}, weight: 50}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: backend, namespace: shop}}
spec:
  host: backend
  trafficPolicy:
    tls: {{mode: SIMPLE, credentialName: backend-ca, sni: backend.example}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: backend-mtls, namespace: shop}}
spec:
  host: backend-mtls
  trafficPolicy:
    tls:
      mode: MUTUAL
      credentialName: client-cert
      sni: backend.example
      subjectAltNames: [backend.example]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: other, namespace: shop}}
spec:
  selector: {{istio: other}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: ["*"]
""" + "".join(service(n, p) for n, p in (("echo", up), ("backend", backend),
                                          ("passthrough", pass_port),
                                          ("passthrough-b", pass_b),
                                          ("backend-mtls", mtls_backend)))


def service(name, port, address="127.0.0.1"):
    return f"""---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: shop}}
spec:
  ports: [{{name: http, port: 80}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: shop, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints:
- addresses: [{address}]
"""


class GatewayProxy:
    """skiff-proxy over xDS from the operator, with the Gateway's ports remapped."""

    def __init__(self, op_port, node_id, labels="istio=ingressgateway", extra=(),
                 ports=(443, 8443, 80), stats=False):
        self.dir = tempfile.mkdtemp(prefix="skiff-gw-")
        self.ports = {p: free_port() for p in ports}
        self.admin = free_port()
        self.stats = free_port() if stats else 0
        self.log_path = os.path.join(self.dir, "proxy.log")
        self.log = open(self.log_path, "w+")
        pm = ",".join(f"{k}={v}" for k, v in self.ports.items())
        self.proc = subprocess.Popen(
            [os.path.join(ARGS.bin_dir, "proxy/skiff-proxy"), "--xds", f"127.0.0.1:{op_port}",
             "--node-id", node_id, "--role", "gateway", "--labels", labels, "--namespace",
             "shop", "--port-map", pm, "--admin-port", str(self.admin), "--stats-port", str(self.stats),
             "--stats-address", "127.0.0.1",
             "--readiness-port", "0", "--concurrency", "2", *extra],
            stdout=self.log, stderr=subprocess.STDOUT)
        pt.PROCS.append(self.proc)
        if not wait_port(self.admin):
            raise RuntimeError("proxy did not start: " + self.logs())

    def logs(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def config_dump(self):
        return pt.http_get(self.admin, "/config_dump")[2].decode()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def header(info, name):
    """A request header the echo upstream saw ("" when absent)."""
    for k, v in info.get("headers", []):
        if k == name:
            return v
    return ""


def serial_of(pem_text):
    return tt.sh("openssl", "x509", "-noout", "-serial", input=pem_text).stdout.strip()


def served_serial(port, name):
    _, out = tt.s_client(port, "-servername", name, "-showcerts")
    return serial_of(out)


def skiffctl(*args):
    r = subprocess.run([os.path.join(ARGS.bin_dir, "cli/skiffctl"), *args], capture_output=True,
                       text=True, timeout=30)
    return r.returncode, r.stdout + r.stderr


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--skip-testssl", action="store_true")
    ARGS = ap.parse_args()
    pt.ARGS = xt.ARGS = tt.ARGS = ARGS
    certs_dir = tempfile.mkdtemp(prefix="skiff-gw-tls-certs-")
    try:
        tt.CERTS = certs = tt.Certs(certs_dir)
        certs.late = certs._leaf("late", "late.example", ["DNS:late.example"], certs.ca)
        certs.default2 = certs._leaf("default2", "default.example", ["DNS:default.example"],
                                     certs.ca)
        up = pt.start_upstream("echo")
        backend = free_port()
        tt.start([sys.executable, os.path.join(HERE, "tls_backend.py"), str(backend), "backend",
                  certs.backend["crt"], certs.backend["key"]])
        pass_port = free_port()
        tt.start([sys.executable, os.path.join(HERE, "tls_backend.py"), str(pass_port),
                  "passthrough", certs.passthrough["crt"], certs.passthrough["key"]])
        pass_b = free_port()
        tt.start([sys.executable, os.path.join(HERE, "tls_backend.py"), str(pass_b),
                  "passthrough-b", certs.passthrough["crt"], certs.passthrough["key"]])
        mtls_backend = free_port()
        tt.start([sys.executable, os.path.join(HERE, "tls_backend.py"), str(mtls_backend),
                  "backend-mtls", certs.backend["crt"], certs.backend["key"], certs.ca["crt"]])
        cfg = tempfile.mkdtemp(prefix="skiff-gw-tls-config-")
        xt.write(os.path.join(cfg, "gateway.yaml"), config(up, backend, pass_port, mtls_backend, pass_b))
        secrets = {
            "default-cert": tls_secret("default-cert", certs.default),
            "shop-cert": tls_secret("shop-cert", certs.shop),
            "wild-cert": tls_secret("wild-cert", certs.wild),
            "mtls-cert": generic_secret("mtls-cert", certs.shop, certs.ca),
            # MUTUAL upstream TLS: the gateway's client certificate and the backend's CA.
            "client-cert": tls_secret("client-cert", certs.client, certs.ca),
            # SIMPLE upstream TLS: only the CA is used.
            "backend-ca": json.dumps({"apiVersion": "v1", "kind": "Secret",
                                      "metadata": {"name": "backend-ca", "namespace": "shop"},
                                      "stringData": {"cacert": open(certs.ca["crt"]).read()}}),
        }
        for name, text in secrets.items():
            xt.write(os.path.join(cfg, f"secret-{name}.yaml"), text)
        op = xt.Operator(cfg)
        gw = GatewayProxy(op.port, "gw-tls")
        other = GatewayProxy(op.port, "gw-other", labels="istio=other")
        delta = GatewayProxy(op.port, "gw-delta", extra=("--xds-delta",))
        try:
            run_checks(op, gw, other, delta, cfg, certs, up)
        finally:
            delta.stop()
            other.stop()
            gw.stop()
            op.stop()
    except Exception:
        check("gateway tls tests", False, traceback.format_exc())
    finally:
        for proc in pt.PROCS:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    print(f"{pt.RESULTS['passed']} passed, {pt.RESULTS['failed']} failed")
    sys.exit(1 if pt.RESULTS["failed"] else 0)


def run_checks(op, gw, other, delta, cfg, certs, up):
    https, mtls, http = gw.ports[443], gw.ports[8443], gw.ports[80]
    ok = wait_until(lambda: wait_port(https, 0.2) and tt.curl(https, "shop.example")[0] == 200,
                    40)
    check("the operator's Gateway and Secret reach the proxy: 443 is served", ok, gw.logs()[-2000:])
    code, body, err = tt.curl(https, "shop.example", "/api/catalog")
    info = json.loads(body) if code == 200 else {}
    check("SIMPLE: curl --cacert https://shop.example/api/catalog -> 200 from the upstream",
          code == 200 and info.get("upstream") == "echo", (code, body, err))
    check("SIMPLE: the upstream sees x-forwarded-proto: https",
          header(info, "x-forwarded-proto") == "https", info)

    # SNI: exact, wildcard, and no SNI -> the first server's certificate.
    _, out = tt.s_client(https, "-servername", "shop.example")
    check("SNI: shop.example gets its Secret's certificate", tt.subject_of(out) == "shop.example",
          out[-400:])
    _, out = tt.s_client(https, "-servername", "x.b.example")
    check("SNI: x.b.example gets the wildcard server's certificate",
          tt.subject_of(out) == "*.b.example", out[-400:])
    _, out = tt.s_client(https, "-noservername")
    check("SNI: a client without SNI gets the first server's certificate",
          tt.subject_of(out) == "default.example", out[-400:])
    # (With h2 the server speaks first, in binary frames: read the output as bytes.)
    out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{https}", "-servername",
                          "shop.example", "-alpn", "h2,http/1.1"], input=b"",
                         capture_output=True, timeout=20)
    out = (out.stdout + out.stderr).decode("utf-8", "replace")
    check("ALPN: h2 for a client that offers it (as Istio's HTTPS servers)",
          "ALPN protocol: h2" in out, out[-400:])
    _, out = tt.s_client(https, "-servername", "shop.example", "-alpn", "http/1.1")
    check("ALPN: http/1.1 for one that offers only that", "ALPN protocol: http/1.1" in out,
          out[-400:])
    code, body, err = tt.curl(https, "shop.example", "/h2", "--http2")
    check("HTTP/2 over TLS: curl --http2 -> 200 from the upstream",
          code == 200 and json.loads(body).get("upstream") == "echo", (code, body, err))
    rc, out = tt.s_client(https, "-servername", "shop.example", "-tls1_1", "-cipher",
                          "DEFAULT@SECLEVEL=0")
    check("protocols: TLS 1.1 is refused (minProtocolVersion defaults to TLS 1.2)",
          rc != 0 or "Cipher is (NONE)" in out, out[-400:])

    # MUTUAL from the generic Secret (cert, key, cacert), with a SAN check.
    code, _, err = tt.curl(mtls, "shop.example")
    check("MUTUAL: no client certificate -> handshake refused", code == 0, (code, err))
    code, body, err = tt.curl(mtls, "shop.example", "/m", "--cert", certs.client["crt"], "--key",
                              certs.client["key"])
    info = json.loads(body) if code == 200 else {}
    check("MUTUAL: a client certificate of the Secret's CA with the SAN -> 200", code == 200,
          (code, err))
    check("MUTUAL: x-forwarded-client-cert names the client",
          "spiffe://cluster.local/ns/shop/sa/a" in header(info, "x-forwarded-client-cert"), info)
    code, _, err = tt.curl(mtls, "shop.example", "/m", "--cert", certs.stranger["crt"], "--key",
                           certs.stranger["key"])
    check("MUTUAL: a certificate of another CA -> refused", code == 0, (code, err))

    # PASSTHROUGH: the backend's own certificate, SNI routed, unterminated.
    _, out = tt.s_client(https, "-servername", "pass.example")
    check("PASSTHROUGH: pass.example reaches the TLS backend unterminated (its certificate)",
          tt.subject_of(out) == "pass.example", out[-400:])
    code, body, err = tt.curl(https, "pass.example", "/p")
    check("PASSTHROUGH: curl https://pass.example -> the backend answers with the SNI",
          code == 200 and json.loads(body).get("sni") == "pass.example", (code, body, err))
    # Two destinations of weight 50: each connection goes to one of them. 60 connections:
    # mean 30 each, sd 3.9; 5 sd bounds.
    servers = {}
    for _ in range(60):
        code, body, err = tt.curl(https, "pass.example", "/w")
        name = json.loads(body).get("server") if code == 200 else f"error {code}"
        servers[name] = servers.get(name, 0) + 1
    check("PASSTHROUGH with weights 50/50: connections split between the two backends "
          "(each 11..49 of 60)", set(servers) == {"passthrough", "passthrough-b"} and
          all(11 <= n <= 49 for n in servers.values()), servers)

    # Upstream TLS from the DestinationRule (SIMPLE, CA from a Secret, sni).
    code, body, err = tt.curl(https, "shop.example", "/to-backend")
    check("DestinationRule tls SIMPLE: the gateway reaches the HTTPS backend, verified by SNI",
          code == 200 and json.loads(body).get("server") == "backend" and
          json.loads(body).get("sni") == "backend.example", (code, body, err))

    code, body, err = tt.curl(https, "shop.example", "/to-backend-mtls")
    got = json.loads(body) if code == 200 else {}
    check("DestinationRule tls MUTUAL: the backend that requires a client certificate gets the "
          "Secret's", code == 200 and got.get("server") == "backend-mtls" and
          "client-a" in got.get("client_subject", ""), (code, body, err))

    # httpsRedirect on 80.
    s, h, _ = pt.http_get(http, "/api/catalog?x=1", host="shop.example")
    loc = h.get("location", "") if isinstance(h, dict) else ""
    check("httpsRedirect: 301 to https, same host and path (the port the proxy serves 443 on)",
          s == 301 and loc == f"https://shop.example:{https}/api/catalog?x=1", (s, h))

    # A missing Secret: the status names the field, the other servers keep working.
    rc, out = skiffctl("translate", "--config-dir", cfg, "--status")
    check("missing Secret: the Gateway's status names spec.servers[3].tls.credentialName",
          "spec.servers[3].tls.credentialName: Secret shop/late-cert does not exist" in out and
          "InvalidCertificateRef" in out, out[-1500:])
    _, out = tt.s_client(https, "-servername", "late.example")
    check("missing Secret: late.example is not served with its own certificate",
          tt.subject_of(out) != "late.example", out[-400:])
    xt.write(os.path.join(cfg, "secret-late-cert.yaml"), tls_secret("late-cert", certs.late))
    ok = wait_until(lambda: tt.subject_of(tt.s_client(https, "-servername", "late.example")[1])
                    == "late.example", 20)
    check("missing Secret: once created it is served (no restart)", ok)
    check("... and shop.example kept working", tt.curl(https, "shop.example")[0] == 200)

    # Only the proxies whose Gateways name a Secret get it.
    dump_other = wait_until(lambda: other.config_dump(), 10) or ""
    check("Secrets go only to proxies whose Gateways name them",
          '"secrets"' not in dump_other and "kubernetes://" not in dump_other, dump_other[:1000])
    status = op.status()
    check("proxy-status lists the secrets type as synced",
          re.search(r"gw-tls .*secrets\s+SYNCED", status) is not None, status[-1500:])

    # Rotation: rewrite the Secrets under load; an established connection survives. (wrk
    # sends its URL's host, 127.0.0.1, as SNI: it gets the first server, default.example.)
    ctx = ssl.create_default_context(cafile=certs.ca["crt"])
    conn = ctx.wrap_socket(socket.create_connection(("127.0.0.1", https), timeout=10),
                           server_hostname="shop.example")
    req = b"GET /kept HTTP/1.1\r\nHost: shop.example\r\n\r\n"
    conn.sendall(req)
    first = pt.recv_response(conn)[0]
    wrk = subprocess.Popen(["wrk", "-t1", "-c8", "-d6s", "-H", "Host: default.example",
                            f"https://127.0.0.1:{https}/"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pt.PROCS.append(wrk)
    time.sleep(1.5)  # load running before the rotation (a measured run, not a wait)
    want = serial_of(open(certs.rotated["crt"]).read())
    want_default = serial_of(open(certs.default2["crt"]).read())
    xt.write(os.path.join(cfg, "secret-shop-cert.yaml"), tls_secret("shop-cert", certs.rotated))
    xt.write(os.path.join(cfg, "secret-default-cert.yaml"),
             tls_secret("default-cert", certs.default2))
    rotated = wait_until(lambda: served_serial(https, "shop.example") == want and
                         served_serial(https, "default.example") == want_default, 20, 0.2)
    out, _ = wrk.communicate(timeout=60)
    total = int(re.search(r"(\d+) requests in", out).group(1)) if "requests in" in out else 0
    errors = [line for line in out.splitlines() if "Socket errors" in line or "Non-2xx" in line]
    check("rotation: a new Secret reaches the proxy; new handshakes get the new certificate",
          rotated is not None)
    check("rotation: a proxy on delta xDS gets the new certificate too",
          wait_until(lambda: served_serial(delta.ports[443], "shop.example") == want, 20, 0.2)
          is not None, delta.logs()[-1500:])
    check("rotation: zero failed requests under load across the rotation (wrk over HTTPS)",
          total > 100 and not errors, out)
    conn.sendall(req)
    try:
        again = pt.recv_response(conn)[0]
    except OSError as e:
        again = e
    check("rotation: a connection established before it still serves requests",
          first == 200 and again == 200, (first, again))
    conn.close()

    # Private keys never leave: /config_dump, skiffctl translate, logs.
    keys = [open(c["key"]).read().strip().splitlines()[1] for c in
            (certs.shop, certs.rotated, certs.default, certs.default2, certs.wild)]
    dump = gw.config_dump()
    _, translated = skiffctl("translate", "--config-dir", cfg, "--role", "gateway",
                             "--labels", "istio=ingressgateway", "--namespace", "shop")
    check("/config_dump has the secrets, their private keys redacted",
          "kubernetes://shop/shop-cert" in dump and not any(k in dump for k in keys) and
          "[redacted]" in dump, dump[:500])
    check("skiffctl translate prints no private key",
          "kubernetes://shop/shop-cert" in translated and
          not any(k in translated for k in keys), translated[:500])
    _, table = skiffctl("proxy-config", "secrets", "--admin", f"127.0.0.1:{gw.admin}")
    check("skiffctl proxy-config secrets lists them, keys as [redacted]",
          re.search(r"kubernetes://shop/shop-cert\s+1 certificate\s+\[redacted\]", table)
          is not None and not any(k in table for k in keys), table)
    _, listeners = skiffctl("proxy-config", "listeners", "--admin", f"127.0.0.1:{gw.admin}")
    check("skiffctl proxy-config listeners shows the SNI chains",
          "shop.example -> Route: https.443.shop.gw.1" in listeners and
          "pass.example -> passthrough" in listeners, listeners)
    logs = op.logs() + gw.logs()
    check("no private key in the operator's or the proxy's log", not any(k in logs for k in keys))

    if not ARGS.skip_testssl:
        report = os.path.join(tempfile.mkdtemp(prefix="skiff-testssl-"), "testssl.json")
        r = tt.sh("testssl", "--quiet", "--color", "0", "--warnings", "off", "--jsonfile", report,
                  "--add-ca", certs.ca["crt"], "--ip", "127.0.0.1", f"shop.example:{https}",
                  timeout=900)
        findings = json.load(open(report)) if os.path.exists(report) else []
        bad = [f for f in findings if f.get("severity") in ("HIGH", "CRITICAL")]
        summary = {}
        for f in findings:
            summary[f.get("severity")] = summary.get(f.get("severity"), 0) + 1
        print(f"     testssl.sh through the operator: severities {summary}")
        for f in findings:
            if f.get("severity") in ("MEDIUM", "LOW", "WARN"):
                print(f"     testssl.sh {f.get('severity')}: {f.get('id')}: {f.get('finding')}")
        check("testssl.sh against the operator-configured gateway: no HIGH or CRITICAL finding",
              findings and not bad, bad or r.stdout[-1500:])


if __name__ == "__main__":
    main()
