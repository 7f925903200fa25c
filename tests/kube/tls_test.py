#!/usr/bin/env python3
"""Gateway TLS from Kubernetes Secrets on a real kube-apiserver + etcd (tests/kube/env.sh),
driven with the real kubectl, served by a real skiff-proxy over xDS and checked with curl
and openssl s_client:

  a Gateway names Secrets that do not exist yet: its status names
  spec.servers[N].tls.credentialName and the port is not served; `kubectl create secret tls`
  makes it served; a rotated Secret (kubectl apply of a new certificate) reaches the proxy
  and new handshakes get it while an established connection keeps working; Istio's generic
  Secret form (cert, key) serves a second server; a deleted Secret takes its server out
  again, the others keep working. The operator watches Secrets only in --secret-namespaces.

Prints 'N passed, N failed'; exits non-zero on failure."""
import argparse
import os
import socket
import ssl
import sys
import tempfile
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, HERE)
import gateway_tls_test as gt  # noqa: E402  (GatewayProxy, services, serials)
import operator_test as ot  # noqa: E402  (Kube, KubeOperator)
import proxy_test as pt  # noqa: E402
import tls_test as tt  # noqa: E402
import xds_test as xt  # noqa: E402
from proxy_test import check  # noqa: E402

ARGS = None
NS = "shop"

GATEWAY = """apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https-shop, protocol: HTTPS}
    hosts: [shop.example]
    tls: {mode: SIMPLE, credentialName: shop-cert}
  - port: {number: 443, name: https-other, protocol: HTTPS}
    hosts: [other.example]
    tls: {mode: SIMPLE, credentialName: other-cert}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: [shop.example, other.example]
  gateways: [gw]
  http:
  - route: [{destination: {host: echo}}]
"""


def resolved_refs(kube):
    for c in ot.conditions(kube, NS, "gateway", "gw"):
        if c["type"] == "ResolvedRefs":
            return c
    return {}


def run(kube, certs):
    up = pt.start_upstream("echo")
    kube.kubectl("apply", "-k", os.path.join(ROOT, "crds"))
    kube.wait_crds()
    kube.kubectl("create", "namespace", NS)
    kube.apply(gt.service("echo", up, address="192.0.2.10"))  # the proxy maps it to 127.0.0.1
    kube.apply(GATEWAY)
    op = ot.KubeOperator(["--kubeconfig", kube.kubeconfig, "--secret-namespaces", NS])
    gw = gt.GatewayProxy(op.port, "gw-kube-tls", extra=ot.MAP)
    https = gw.ports[443]

    c = ot.wait_until(lambda: "shop-cert" in resolved_refs(kube).get("message", "") and
                      resolved_refs(kube), 30) or {}
    check("no Secret yet: the Gateway's ResolvedRefs names spec.servers[0].tls.credentialName",
          c.get("status") == "False" and c.get("reason") == "InvalidCertificateRef" and
          "spec.servers[0].tls.credentialName: Secret shop/shop-cert does not exist" in
          c.get("message", ""), c or op.logs()[-2000:])
    code, _, err = tt.curl(https, "shop.example")
    check("no Secret yet: shop.example is not served", code == 0, (code, err))

    kube.kubectl("create", "secret", "tls", "shop-cert", "-n", NS, "--cert", certs.shop["crt"],
                 "--key", certs.shop["key"])
    served = gt.wait_until(lambda: tt.curl(https, "shop.example", "/a")[0] == 200, 30)
    check("kubectl create secret tls -> the proxy serves shop.example with it (curl --cacert)",
          served, gw.logs()[-2000:])
    _, out = tt.s_client(https, "-servername", "shop.example")
    check("... with the Secret's certificate", tt.subject_of(out) == "shop.example", out[-400:])
    c = ot.wait_until(lambda: "shop-cert" not in resolved_refs(kube).get("message", "") and
                      resolved_refs(kube), 30) or {}
    check("... and the status names only the Secret still missing (other-cert)",
          "spec.servers[1].tls.credentialName" in c.get("message", "") and
          "shop-cert" not in c.get("message", ""), c)

    # Rotation through the API, with a connection established before it.
    ctx = ssl.create_default_context(cafile=certs.ca["crt"])
    conn = ctx.wrap_socket(socket.create_connection(("127.0.0.1", https), timeout=10),
                           server_hostname="shop.example")
    req = b"GET /kept HTTP/1.1\r\nHost: shop.example\r\n\r\n"
    conn.sendall(req)
    first = pt.recv_response(conn)[0]
    rotated_yaml = kube.kubectl("create", "secret", "tls", "shop-cert", "-n", NS, "--cert",
                                certs.rotated["crt"], "--key", certs.rotated["key"],
                                "--dry-run=client", "-o", "yaml").stdout
    kube.apply(rotated_yaml)
    want = gt.serial_of(open(certs.rotated["crt"]).read())
    rotated = gt.wait_until(lambda: gt.served_serial(https, "shop.example") == want, 30, 0.2)
    check("a rotated Secret (kubectl apply) reaches the proxy: new handshakes get it", rotated)
    conn.sendall(req)
    try:
        again = pt.recv_response(conn)[0]
    except OSError as e:
        again = e
    conn.close()
    check("... and a connection established before the rotation keeps working",
          first == 200 and again == 200, (first, again))

    # A Secret without TLS keys (a password) is never kept by the operator.
    before = op.metric("skiff_operator_store_objects")
    kube.kubectl("create", "secret", "generic", "db-password", "-n", NS,
                 "--from-literal=password=hunter2")
    # A Secret with TLS keys in a namespace not in --secret-namespaces is not watched either.
    kube.kubectl("create", "namespace", "elsewhere")
    kube.kubectl("create", "secret", "tls", "shop-cert", "-n", "elsewhere", "--cert",
                 certs.shop["crt"], "--key", certs.shop["key"])
    marker = kube.kubectl("create", "secret", "tls", "marker", "-n", NS, "--cert",
                          certs.shop["crt"], "--key", certs.shop["key"])
    after = ot.wait_until(lambda: op.metric("skiff_operator_store_objects") == before + 1 and
                          op.metric("skiff_operator_store_objects"), 20)
    check("only TLS Secrets of the watched namespace are kept (a password Secret and another "
          "namespace's TLS Secret are not)", after == before + 1 and marker.returncode == 0,
          (before, op.metric("skiff_operator_store_objects")))

    # Istio's generic form.
    kube.kubectl("create", "secret", "generic", "other-cert", "-n", NS,
                 f"--from-file=cert={certs.default['crt']}",
                 f"--from-file=key={certs.default['key']}")
    ok = gt.wait_until(lambda: tt.subject_of(tt.s_client(https, "-servername", "other.example")[1])
                       == "default.example", 30)
    check("a generic Secret (cert, key) serves the second server", ok)
    c = ot.wait_until(lambda: resolved_refs(kube).get("status") == "True" and resolved_refs(kube),
                      30) or {}
    check("... and the Gateway's ResolvedRefs is True", c.get("status") == "True", c)

    kube.kubectl("delete", "secret", "other-cert", "-n", NS)
    gone = gt.wait_until(lambda: tt.subject_of(tt.s_client(https, "-servername",
                                                           "other.example")[1])
                         != "default.example", 30)
    check("a deleted Secret takes its server out", gone)
    check("... while shop.example keeps working", tt.curl(https, "shop.example")[0] == 200)
    c = ot.wait_until(lambda: resolved_refs(kube).get("status") == "False" and
                      resolved_refs(kube), 30) or {}
    check("... and the status names it again",
          "spec.servers[1].tls.credentialName: Secret shop/other-cert does not exist" in
          c.get("message", ""), c)
    logs = op.logs() + gw.logs()
    key_line = open(certs.rotated["key"]).read().strip().splitlines()[1]
    check("no private key (nor the password) in the operator's or the proxy's log",
          key_line not in logs and "hunter2" not in logs)
    gw.stop()
    op.stop()


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ARGS = ap.parse_args()
    pt.ARGS = xt.ARGS = ot.ARGS = gt.ARGS = tt.ARGS = ARGS
    kube = None
    try:
        tt.CERTS = certs = tt.Certs(tempfile.mkdtemp(prefix="skiff-kube-tls-certs-"))
        kube = ot.Kube()
        run(kube, certs)
    except Exception:
        check("kube tls scenario", False, traceback.format_exc())
    finally:
        for proc in pt.PROCS:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if kube is not None:
            kube.stop()
    print(f"{pt.RESULTS['passed']} passed, {pt.RESULTS['failed']} failed")
    sys.exit(1 if pt.RESULTS["failed"] else 0)


if __name__ == "__main__":
    main()
