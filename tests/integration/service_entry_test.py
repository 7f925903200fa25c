#!/usr/bin/env python3
"""ServiceEntry through the operator: hosts that are no Kubernetes Service (an external API,
a VM's database) added with STATIC endpoints in a --config-dir, routed to by a gateway's
VirtualService over real sockets. HTTP to the entry's endpoints by subset (the endpoints'
labels) and by the endpoints' own port of the port's name; TCP to a targetPort of an entry
with resolution DNS whose endpoint is a name the proxy resolves (localhost); a changed
endpoint list reaching new requests; an invalid entry refused with its field path while
the last valid one is still served; `skiffctl translate --status`. Prints 'N passed, N failed'."""
import argparse
import json
import os
import sys
import tempfile
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gateway_tcp_test as tcp  # noqa: E402  (TCP echo backends)
import gateway_tls_test as gt  # noqa: E402  (the gateway proxy over xDS)
import last_good_test as lg  # noqa: E402  (skiffctl status)
import proxy_test as pt  # noqa: E402
import xds_test as xt  # noqa: E402  (the file-source operator)
from proxy_test import check  # noqa: E402

ARGS = None

ROUTES = """apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: partner-api, namespace: shop}
spec:
  hosts: ["*"]
  gateways: [edge]
  http:
  - match: [{headers: {x-version: {exact: v2}}}]
    route: [{destination: {host: api.partner.example, subset: v2}}]
  - route: [{destination: {host: api.partner.example, subset: v1}}]
  tcp:
  - match: [{port: 31400}]
    route: [{destination: {host: db.vm.internal, port: {number: 5432}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: partner-api, namespace: shop}
spec:
  host: api.partner.example
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""


def entries(v1, v2, db, v1_address="127.0.0.1"):
    return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: partner-api, namespace: shop}}
spec:
  hosts: [api.partner.example]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports:
  - {{number: 80, name: http, protocol: HTTP}}
  endpoints:
  - address: {v1_address}
    ports: {{http: {v1}}}
    labels: {{version: v1}}
  - address: 127.0.0.1
    ports: {{http: {v2}}}
    labels: {{version: v2}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: vm-db, namespace: shop}}
spec:
  hosts: [db.vm.internal]
  location: MESH_INTERNAL
  resolution: DNS
  ports:
  - {{number: 5432, name: tcp-pg, protocol: TCP, targetPort: {db}}}
  endpoints:
  - address: localhost
"""


def upstream_of(port, headers=None):
    status, _, body = pt.http_get(port, "/hello", host="shop.example", headers=headers)
    if status != 200:
        return f"status {status}"
    return json.loads(body.decode()).get("upstream")


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ARGS = ap.parse_args()
    pt.ARGS = xt.ARGS = gt.ARGS = lg.ARGS = ARGS
    try:
        v1, v2, v3 = pt.start_upstream("v1"), pt.start_upstream("v2"), pt.start_upstream("v3")
        db = tcp.EchoServer("db")
        cfg = tempfile.mkdtemp(prefix="skiff-se-config-")
        xt.write(os.path.join(cfg, "routes.yaml"), ROUTES)
        xt.write(os.path.join(cfg, "entries.yaml"), entries(v1, v2, db.port))
        op = xt.Operator(cfg)
        gw = gt.GatewayProxy(op.port, "gw-se", ports=(8080, 31400))
        try:
            run_checks(cfg, op, gw, v1, v2, v3, db)
        finally:
            gw.stop()
            op.stop()
    except Exception:
        check("service entry tests", False, traceback.format_exc())
    finally:
        for proc in pt.PROCS:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    print(f"{pt.RESULTS['passed']} passed, {pt.RESULTS['failed']} failed")
    sys.exit(1 if pt.RESULTS["failed"] else 0)


def run_checks(cfg, op, gw, v1, v2, v3, db):
    http = gw.ports[8080]
    first = gt.wait_until(lambda: upstream_of(http) == "v1", timeout=60)
    check("a gateway route to a ServiceEntry host reaches its STATIC endpoint (subset v1 by "
          "the endpoint's labels, on the endpoint's own port)", bool(first), upstream_of(http))
    got = {upstream_of(http, {"x-version": "v2"}) for _ in range(10)}
    check("subset v2 of the same host: the other endpoint, 10 of 10", got == {"v2"}, str(got))
    got = {upstream_of(http) for _ in range(10)}
    check("subset v1: 10 of 10", got == {"v1"}, str(got))

    answer = gt.wait_until(lambda: tcp.converse(gw.ports[31400]), timeout=30)
    check("a tcp route to a ServiceEntry host with resolution DNS reaches its endpoint "
          "'localhost', resolved by the proxy (from the hosts file), on the port's targetPort",
          answer == b"db:hellodb:bye", repr(answer))
    got = {tcp.converse(gw.ports[31400]) for _ in range(10)}
    check("... 10 of 10", got == {b"db:hellodb:bye"}, str(got))
    rc, out = gt.skiffctl("proxy-config", "endpoints", "--admin", f"127.0.0.1:{gw.admin}")
    check("skiffctl proxy-config endpoints shows the address the name resolved to",
          rc == 0 and f"127.0.0.1:{db.port}" in out and "db.vm.internal" in out, out[-2000:])

    rc, out = gt.skiffctl("translate", "--config-dir", cfg, "--status")
    check("skiffctl translate --status: both entries are Accepted, with nothing left unserved",
          rc == 0 and out.count('"kind": "ServiceEntry"') == 2 and '"reason": "Invalid"' not in
          out and "UnsupportedValue" not in out, out[-3000:])

    # The endpoints change: v1's endpoint moves to another backend.
    xt.write(os.path.join(cfg, "entries.yaml"), entries(v3, v2, db.port))
    moved = gt.wait_until(lambda: upstream_of(http) == "v3", timeout=60)
    check("a changed ServiceEntry endpoint reaches new requests", bool(moved), upstream_of(http))

    # An invalid version (a DNS name under STATIC) is refused; the last valid one serves.
    xt.write(os.path.join(cfg, "entries.yaml"), entries(v1, v2, db.port,
                                                        v1_address="partner-v1.example"))
    refused = gt.wait_until(lambda: "partner-v1.example" in xt_status(op), timeout=60)
    out = xt_status(op)
    check("an invalid ServiceEntry is refused with its field path",
          bool(refused) and "ServiceEntry shop/partner-api" in out and
          "spec.endpoints[0].address" in out and "is not an IP address" in out, out[-2000:])
    got = {upstream_of(http) for _ in range(5)}
    check("... and its last valid version is still served", got == {"v3"}, str(got))


def xt_status(op):
    return lg.status(op)[1]  # skiffctl status --operator


if __name__ == "__main__":
    main()
