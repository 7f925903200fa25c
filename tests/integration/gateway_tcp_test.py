#!/usr/bin/env python3
"""TCP at the gateway through the operator (Istio's "TCP traffic shifting" task): a Gateway
TCP server and a VirtualService tcp: route with weights in a --config-dir, the operator
serving the proxy over xDS, real sockets to TCP echo backends. Bytes both ways and a
half-close, connections split by weight, a weight change reaching new connections while an
established one keeps its backend, the route shown by skiffctl proxy-config, a TCP server
without a route refused, and a GRPC server served as HTTP (h2c by its preface).
Prints 'N passed, N failed'."""
import argparse
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gateway_tls_test as gt  # noqa: E402  (the gateway proxy over xDS)
import proxy_test as pt  # noqa: E402
import tls_test as tt  # noqa: E402  (certificates)
import xds_test as xt  # noqa: E402  (the file-source operator)
from proxy_test import check, free_port  # noqa: E402

ARGS = None


class EchoServer:
    """A TCP backend: answers each connection with "<name>:" and then echoes every byte;
    on the client's half-close it sends "<name>:bye" and closes. Counts connections."""

    def __init__(self, name):
        self.name = name.encode()
        self.connections = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self.echo, args=(c,), daemon=True).start()

    def echo(self, c):
        c.settimeout(30)
        try:
            c.sendall(self.name + b":")
            while True:
                d = c.recv(65536)
                if not d:
                    c.sendall(self.name + b":bye")
                    break
                c.sendall(d)
        except OSError:
            pass
        finally:
            c.close()

    def count(self):
        with self.lock:
            return self.connections


def config(weight_a, weight_b, up):
    return f"""apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: tcp-gateway, namespace: shop}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 31400, name: tcp, protocol: TCP}}
    hosts: ["*"]
  - port: {{number: 31401, name: tcp-unrouted, protocol: TCP}}
    hosts: ["*"]
  - port: {{number: 8080, name: grpc, protocol: GRPC}}
    hosts: ["*"]
  - port: {{number: 31443, name: tls-echo, protocol: TLS}}
    hosts: [shop.example]
    tls: {{mode: SIMPLE, credentialName: echo-cert}}
  - port: {{number: 31444, name: tls-mutual, protocol: TLS}}
    hosts: [shop.example]
    tls: {{mode: MUTUAL, credentialName: echo-cert}}
  - port: {{number: 31445, name: tls-unrouted, protocol: TLS}}
    hosts: [shop.example]
    tls: {{mode: SIMPLE, credentialName: echo-cert}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: tcp-echo, namespace: shop}}
spec:
  hosts: ["*"]
  gateways: [tcp-gateway]
  tcp:
  - match: [{{port: 31400}}]
    route:
    - destination: {{host: tcp-echo, port: {{number: 9000}}, subset: v1}}
      weight: {weight_a}
    - destination: {{host: tcp-echo, port: {{number: 9000}}, subset: v2}}
      weight: {weight_b}
  - match: [{{port: 31443}}, {{port: 31444}}]
    route:
    - destination: {{host: tcp-echo, port: {{number: 9000}}, subset: v1}}
  http:
  - route: [{{destination: {{host: web}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: tcp-echo, namespace: shop}}
spec:
  host: tcp-echo
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
""" + gt.service("web", up)


def backends(a, b):
    """The tcp-echo Service (port 9000) with one endpoint per version."""
    slices = "".join(f"""---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: tcp-echo-{v}, namespace: shop, labels: {{kubernetes.io/service-name: tcp-echo}}}}
addressType: IPv4
ports: [{{name: tcp, port: {port}}}]
endpoints:
- addresses: [127.0.0.1]
  conditions: {{ready: true}}
  targetRef: {{kind: Pod, name: tcp-echo-{v}, namespace: shop}}
""" for v, port in (("v1", a), ("v2", b)))
    pods = "".join(f"""---
apiVersion: v1
kind: Pod
metadata: {{name: tcp-echo-{v}, namespace: shop, labels: {{app: tcp-echo, version: {v}}}}}
status: {{podIP: 127.0.0.1, conditions: [{{type: Ready, status: "True"}}]}}
""" for v in ("v1", "v2"))
    return f"""apiVersion: v1
kind: Service
metadata: {{name: tcp-echo, namespace: shop}}
spec:
  selector: {{app: tcp-echo}}
  ports: [{{name: tcp, port: 9000}}]
""" + slices + pods


def converse(port, payload=b"hello"):
    """Connects, sends payload, half-closes, reads to EOF: the backend's answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        def send():
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
        # (Sent from a thread: the answer is read while a large payload is still going.)
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        out = b""
        deadline = time.time() + 10
        while time.time() < deadline:
            d = s.recv(65536)
            if not d:
                break
            out += d
        sender.join(10)
        return out


def backend_of(answer):
    return answer.split(b":", 1)[0].decode() if b":" in answer else ""


def split(port, n):
    got = {}
    for _ in range(n):
        b = backend_of(converse(port))
        got[b] = got.get(b, 0) + 1
    return got


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ARGS = ap.parse_args()
    pt.ARGS = xt.ARGS = gt.ARGS = tt.ARGS = ARGS
    try:
        a, b = EchoServer("v1"), EchoServer("v2")
        up = pt.start_upstream("web")
        cfg = tempfile.mkdtemp(prefix="skiff-gw-tcp-config-")
        xt.write(os.path.join(cfg, "gateway.yaml"), config(50, 50, up))
        xt.write(os.path.join(cfg, "backends.yaml"), backends(a.port, b.port))
        certs = tt.Certs(tempfile.mkdtemp(prefix="skiff-gw-tcp-certs-"))
        xt.write(os.path.join(cfg, "secret.yaml"), gt.tls_secret("echo-cert", certs.shop, certs.ca))
        op = xt.Operator(cfg)
        gw = gt.GatewayProxy(op.port, "gw-tcp", ports=(31400, 31401, 8080, 31443, 31444, 31445),
                             stats=True)
        try:
            run_checks(cfg, op, gw, a, b, up)
            tls_checks(gw, certs)
        finally:
            gw.stop()
            op.stop()
    except Exception:
        check("gateway tcp tests", False, traceback.format_exc())
    finally:
        for proc in pt.PROCS:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    print(f"{pt.RESULTS['passed']} passed, {pt.RESULTS['failed']} failed")
    sys.exit(1 if pt.RESULTS["failed"] else 0)


def run_checks(cfg, op, gw, a, b, up):
    tcp = gw.ports[31400]
    first = gt.wait_until(lambda: converse(tcp), timeout=60)
    check("a connection to the TCP server reaches a tcp-echo backend: its greeting, the echo "
          "and the answer to the half-close", first in (b"v1:hellov1:bye", b"v2:hellov2:bye"),
          repr(first))
    big = os.urandom(1 << 20)
    answer = converse(tcp, big)
    name = backend_of(answer)
    check("1 MiB both ways, byte for byte", answer == (name + ":").encode() + big +
          (name + ":bye").encode(), f"{len(answer)} bytes back")
    got = split(tcp, 40)
    check("weights 50/50: 40 connections split between v1 and v2",
          got.get("v1", 0) > 0 and got.get("v2", 0) > 0 and got.get("", 0) == 0, str(got))

    # Istio's TCP metrics, by destination version: every connection so far was opened and
    # closed, and the 1 MiB went both ways.
    def tcp_metric(name, version):
        body = pt.http_get(gw.stats, "/stats/prometheus")[2].decode()
        total = 0
        for line in body.splitlines():
            if line.startswith(name + "{") and f'destination_version="{version}"' in line and \
                    'destination_service="tcp-echo.shop.svc.cluster.local"' in line and \
                    'request_protocol="tcp"' in line and 'reporter="source"' in line:
                total += int(line.rsplit(" ", 1)[1])
        return total
    # (A connection's close is counted when the proxy sees it: wait for the last ones.)
    closed = gt.wait_until(lambda: tcp_metric("istio_tcp_connections_closed_total", "v1") +
                           tcp_metric("istio_tcp_connections_closed_total", "v2") >= 42,
                           timeout=30)
    opened = sum(tcp_metric("istio_tcp_connections_opened_total", v) for v in ("v1", "v2"))
    received = sum(tcp_metric("istio_tcp_received_bytes_total", v) for v in ("v1", "v2"))
    sent = sum(tcp_metric("istio_tcp_sent_bytes_total", v) for v in ("v1", "v2"))
    v1 = got.get("v1", 0) + (backend_of(first) == "v1") + (name == "v1")
    check("istio_tcp_connections_opened/closed_total count the 42 connections, by version",
          opened == 42 and bool(closed) and
          tcp_metric("istio_tcp_connections_opened_total", "v1") == v1,
          f"opened {opened} (v1 {tcp_metric('istio_tcp_connections_opened_total', 'v1')}, "
          f"expected {v1}) closed {closed}")
    check("istio_tcp_received/sent_bytes_total hold the 1 MiB each way",
          received >= (1 << 20) + 40 * 5 and sent >= (1 << 20) + 40 * 5,
          f"received {received} sent {sent}")

    rc, out = gt.skiffctl("proxy-config", "listeners", "--admin", f"127.0.0.1:{gw.admin}")
    check("skiffctl proxy-config listeners shows the TCP listener and its weighted clusters",
          rc == 0 and "0.0.0.0_31400" in out and
          "TCP: outbound|9000|v1|tcp-echo.shop.svc.cluster.local 50" in out, out)

    # A connection that stays open keeps its backend while the weights move to v2 only.
    held = socket.create_connection(("127.0.0.1", tcp), timeout=10)
    greeting = held.recv(3)
    xt.write(os.path.join(cfg, "gateway.yaml"), config(0, 100, up))
    shifted = gt.wait_until(lambda: split(tcp, 5) == {"v2": 5}, timeout=60, step=0.2)
    check("after the weights change to 0/100, new connections all go to v2", bool(shifted))
    got = split(tcp, 20)
    check("... 20 of 20", got == {"v2": 20}, str(got))
    held.sendall(b"still")
    held.shutdown(socket.SHUT_WR)
    rest = b""
    while True:
        d = held.recv(65536)
        if not d:
            break
        rest += d
    held.close()
    name = greeting[:2].decode()
    check("the connection opened before the change keeps its backend",
          rest == f"still{name}:bye".encode(), repr(greeting + rest))

    # A TCP server no tcp: route is bound to: no listener, the connection is refused.
    refused = False
    try:
        socket.create_connection(("127.0.0.1", gw.ports[31401]), timeout=5).close()
    except OSError:
        refused = True
    check("a TCP server without a tcp route is not served (connection refused)", refused)

    # A GRPC server is an HTTP listener: an HTTP/2 client (prior knowledge) is routed by the
    # http: section.
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
                        "--http2-prior-knowledge", "--max-time", "10",
                        f"http://127.0.0.1:{gw.ports[8080]}/hello"],
                       capture_output=True, text=True, timeout=30)
    check("a GRPC server serves HTTP/2 (h2c) through its routes", r.stdout == "200 2", r.stdout)


def tls_converse(port, certs, payload=b"hello", client=None, server_name="shop.example"):
    """As converse(), inside TLS (verified against the test CA): the backend's answer. One
    thread (an SSL object must not be read and written at once): the payload goes in 16 KiB
    pieces, the echo is read as it comes."""
    ctx = ssl.create_default_context(cafile=certs.ca["crt"])
    if client is not None:
        ctx.load_cert_chain(client["crt"], client["key"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name) as s:
            s.settimeout(0.05)
            out, want, sent = b"", 3 + len(payload), 0
            deadline = time.time() + 30
            while len(out) < want and time.time() < deadline:
                if sent < len(payload):
                    s.settimeout(10)
                    s.sendall(payload[sent:sent + 16384])
                    sent += min(16384, len(payload) - sent)
                    s.settimeout(0.05)
                try:
                    while True:
                        d = s.recv(65536)
                        if not d:
                            return out
                        out += d
                except (socket.timeout, ssl.SSLWantReadError):
                    pass
            return out


def tls_checks(gw, certs):
    """Gateway TLS servers that terminate: the bytes inside go by their tcp: route."""
    port = gw.ports[31443]
    first = gt.wait_until(lambda: tls_converse(port, certs), timeout=60)
    check("a TLS server (SIMPLE) terminates, then its tcp: route: v1's greeting and the echo "
          "inside TLS, the certificate verified for shop.example", first == b"v1:hello",
          repr(first))
    big = os.urandom(1 << 20)
    answer = tls_converse(port, certs, big)
    check("TLS to TCP: 1 MiB through, byte for byte", answer == b"v1:" + big,
          f"{len(answer or b'')} bytes back")
    mutual = gw.ports[31444]
    answer = gt.wait_until(lambda: tls_converse(mutual, certs, client=certs.client), timeout=60)
    check("a MUTUAL TLS server with a client certificate: through to v1", answer == b"v1:hello",
          repr(answer))
    refused = None
    try:
        tls_converse(mutual, certs)
    except (OSError, ssl.SSLError) as e:
        refused = e
    check("... without a client certificate: refused", refused is not None)
    st = pt.http_get(gw.stats, "/stats/prometheus")[2].decode()
    check("TLS-terminated TCP connections are in Istio's TCP metrics",
          any(l.startswith("istio_tcp_connections_opened_total{") and 'destination_version="v1"'
              in l for l in st.splitlines()))
    rc, out = gt.skiffctl("proxy-config", "listeners", "--admin", f"127.0.0.1:{gw.admin}")
    check("skiffctl proxy-config listeners shows the TLS chain's tcp route",
          rc == 0 and "shop.example -> TCP: outbound|9000|v1|tcp-echo.shop.svc.cluster.local"
          in out, out)
    refused = False
    try:
        socket.create_connection(("127.0.0.1", gw.ports[31445]), timeout=5).close()
    except OSError:
        refused = True
    check("a terminating TLS server without a tcp: route is not served (connection refused)",
          refused)


if __name__ == "__main__":
    main()
