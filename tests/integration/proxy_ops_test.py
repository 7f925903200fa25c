#!/usr/bin/env python3
"""skiff-proxy's operational surfaces as real processes on 127.0.0.1 (issue #12):

  admin server: silent clients and endless partial heads do not block others; head size
  bounded (431); readiness on its own port (/healthz/ready); GET / lists the endpoints;
  /ready: 503 until a complete config arrived (also when a response was too large), a
  listener bind error lasts only while the listener is configured and unbound;
  no silent port sharing: a taken --admin-port / --stats-port / --readiness-port makes the
  proxy exit 1 naming the address and the flag; the default "15090 / 15021 when free" detects
  a port taken even with SO_REUSEPORT;
  xDS: a route table over gRPC's 4 MiB default arrives; an oversized response is NACKed and
  shown by skiffctl proxy-status;
  graceful shutdown: SIGTERM lets requests in flight finish, refuses new connections and
  exits within 2 s.

Prints 'N passed, N failed'; exits non-zero on failure."""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import proxy_test as pt  # noqa: E402
import xds_test as xt  # noqa: E402
from proxy_test import check, http_get, route, snapshot, to  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = None


def proxy_bin():
    return os.path.join(ARGS.bin_dir, "proxy/skiff-proxy")


def wait_until(fn, timeout=20, interval=0.05):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    return last


def status_of(port, path, timeout=10):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        st, _, body = pt.recv_response(s)
        s.close()
        return st, body.decode(errors="replace")
    except OSError as e:
        return None, str(e)


def still_open(sock):
    """True if the peer has neither closed nor reset the connection (nothing to read yet)."""
    sock.setblocking(False)
    try:
        data = sock.recv(1)
        return False if not data else True
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def hold_port(port, address="127.0.0.1", reuseport=False):
    """A listening socket of this test process on address:port (another 'process' holding it)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((address, port))
    s.listen(16)
    return s


def run_until_exit(args, timeout=20):
    """Starts a proxy expected to fail; returns (returncode or None if it kept running, log)."""
    log = tempfile.TemporaryFile(mode="w+")
    p = subprocess.Popen([proxy_bin(), *args], stdout=log, stderr=subprocess.STDOUT)
    pt.PROCS.append(p)
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        rc = None
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    log.seek(0)
    return rc, log.read()


def simple_snapshot(up):
    return snapshot({("*",): [route([to("a")])]}, {"a": [up["a"]]})


# ---------------------------------------------------------------------------------------

def t_admin_not_blocked(up):
    p = pt.Proxy(simple_snapshot(up), "--stats-port", "0", "--readiness-port", "0")
    held = []
    try:
        for _ in range(20):
            held.append(socket.create_connection(("127.0.0.1", p.admin), timeout=5))
        for _ in range(5):  # a partial head, one more byte now and then
            s = socket.create_connection(("127.0.0.1", p.admin), timeout=5)
            s.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            held.append(s)
        st_ready = status_of(p.admin, "/ready", timeout=60)
        for s in held[20:]:
            s.sendall(b"a")
        st_stats = status_of(p.admin, "/stats", timeout=60)
        open_after = sum(1 for s in held if still_open(s))
        check("admin: 20 silent clients and 5 endless partial heads do not stop /ready and "
              "/stats for others (answered while all 25 are still open)",
              st_ready[0] == 200 and st_stats[0] == 200 and "downstream_rq_total" in st_stats[1]
              and open_after == 25, (st_ready, st_stats[0], open_after))

        s = socket.create_connection(("127.0.0.1", p.admin), timeout=20)
        big = b"GET /stats HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (100 * 1024) + b"\r\n\r\n"
        try:
            s.sendall(big)
        except OSError:
            pass
        try:
            st, _, _ = pt.recv_response(s)
        except (OSError, ValueError) as e:
            st = repr(e)
        check("admin: a request head over 64 KiB is answered 431 and the connection closed",
              st == 431 and pt.closed_by_peer(s, timeout=20), st)
        s.close()

        st, body = status_of(p.admin, "/")
        check("admin: GET / lists the endpoints",
              st == 200 and all(e in body for e in ("/ready", "/stats", "/stats/prometheus",
                                                    "/config_dump", "/clusters")), (st, body))
    finally:
        for s in held:
            s.close()
        p.stop()


def t_readiness_port(up):
    ready = pt.free_port()
    p = pt.Proxy(simple_snapshot(up), "--stats-port", "0", "--readiness-port", str(ready),
                 "--readiness-address", "127.0.0.1")
    try:
        st, body = wait_until(lambda: status_of(ready, "/healthz/ready")[0] == 200 and
                              status_of(ready, "/healthz/ready"), 20) or (None, "")
        other, _ = status_of(ready, "/stats")
        check("readiness: --readiness-port serves /healthz/ready (200 when ready) and nothing "
              "else (404)", st == 200 and other == 404, (st, body, other))
        silent = [socket.create_connection(("127.0.0.1", ready), timeout=5) for _ in range(10)]
        st2, _ = status_of(ready, "/healthz/ready", timeout=60)
        check("readiness: silent clients on the readiness port do not block the probe",
              st2 == 200 and all(still_open(s) for s in silent), st2)
        for s in silent:
            s.close()
    finally:
        p.stop()


def t_manifests():
    text = open(os.path.join(ROOT, "manifests", "ingressgateway.yaml")).read()
    probe = re.search(r"readinessProbe:\s*\n\s*httpGet:\s*\{([^}]*)\}", text)
    check("manifests: the gateway's readiness probe is Istio's :15021/healthz/ready and the "
          "admin port stays on 127.0.0.1",
          probe is not None and "15021" in probe.group(1) and "/healthz/ready" in probe.group(1)
          and "--admin-address" not in text and "containerPort: 15021" in text,
          probe.group(0) if probe else text)


def t_ready_listener_errors(up):
    d = tempfile.mkdtemp(prefix="skiff-ready-")
    try:
        taken = pt.free_port()
        holder = hold_port(taken, "0.0.0.0")
        base = simple_snapshot(up)
        two = snapshot({("*",): [route([to("a")])]}, {"a": [up["a"]]})
        two["listeners"].append({"name": "0.0.0.0_81", "address": "0.0.0.0", "port": 81,
                                 "protocol": "HTTP", "routeTable": "http.80"})
        p = pt.Proxy(two, "--port-map", f"81={taken}", "--stats-port", "0",
                     "--readiness-port", "0")
        try:
            st = wait_until(lambda: status_of(p.admin, "/ready")[0] == 503, 20)
            _, body = status_of(p.admin, "/ready")
            check("/ready: 503 while a configured listener cannot bind, naming it",
                  st and "0.0.0.0_81" in body, body)
            p.reload(base)
            check("/ready: removing the listener that failed makes /ready 200 again",
                  wait_until(lambda: status_of(p.admin, "/ready")[0] == 200, 20),
                  status_of(p.admin, "/ready"))
            p.reload(two)
            wait_until(lambda: status_of(p.admin, "/ready")[0] == 503, 20)
            holder.close()
            holder = None
            two["routeTables"][0]["virtualHosts"][0]["domains"] = ["*", "retry.example.com"]
            p.reload(two)
            ok = wait_until(lambda: status_of(p.admin, "/ready")[0] == 200, 20)
            check("/ready: a later successful bind of the same listener makes /ready 200 again",
                  ok and http_get(taken, "/")[0] == 200, status_of(p.admin, "/ready"))
        finally:
            p.stop()
            if holder is not None:
                holder.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def t_port_sharing(up):
    snap = simple_snapshot(up)
    d = tempfile.mkdtemp(prefix="skiff-ports-")
    f = os.path.join(d, "snap.json")
    with open(f, "w") as fh:
        fh.write(json.dumps(snap))
    try:
        first = pt.Proxy(snap, "--stats-port", "0", "--readiness-port", "0")
        try:
            args = ["--bootstrap", f, "--port-map", f"80={pt.free_port()}", "--admin-port",
                    str(first.admin), "--stats-port", "0", "--readiness-port", "0"]
            rc, log = run_until_exit(args)
            want = f"address already in use: 127.0.0.1:{first.admin} (--admin-port)"
            check("ports: a second proxy on the admin port of another proxy exits 1: "
                  "'address already in use: 127.0.0.1:PORT (--admin-port)'",
                  rc == 1 and want in log, (rc, log[-800:]))
        finally:
            first.stop()

        port = pt.free_port()
        holder = hold_port(port)
        try:
            rc, log = run_until_exit(["--bootstrap", f, "--port-map", f"80={pt.free_port()}",
                                      "--admin-port", str(port), "--stats-port", "0",
                                      "--readiness-port", "0"])
            check("ports: an admin port held by another program (no SO_REUSEPORT) -> exit 1, "
                  "not a proxy that neither serves nor exits",
                  rc == 1 and f"address already in use: 127.0.0.1:{port} (--admin-port)" in log,
                  (rc, log[-800:]))
        finally:
            holder.close()

        for flag, addr_flag in (("--stats-port", "--stats-address"),
                                ("--readiness-port", "--readiness-address")):
            port = pt.free_port()
            holder = hold_port(port, reuseport=True)
            try:
                args = ["--bootstrap", f, "--port-map", f"80={pt.free_port()}", "--admin-port",
                        str(pt.free_port()), flag, str(port), addr_flag, "127.0.0.1"]
                if flag != "--stats-port":
                    args += ["--stats-port", "0"]
                else:
                    args += ["--readiness-port", "0"]
                rc, log = run_until_exit(args)
                check(f"ports: {flag} taken (even with SO_REUSEPORT) -> exit 1 naming it",
                      rc == 1 and f"address already in use: 127.0.0.1:{port} ({flag})" in log,
                      (rc, log[-800:]))
            finally:
                holder.close()

        # The defaults: 15090 / 15021 "when free". Held here with SO_REUSEPORT (as another
        # proxy would): the proxy must notice and run without them, never join.
        for default, flag in ((15090, "--stats-port"), (15021, "--readiness-port")):
            try:
                holder = hold_port(default, "0.0.0.0", reuseport=True)
            except OSError:
                holder = None  # held by someone else on this machine: just as taken
            try:
                other = "--readiness-port" if flag == "--stats-port" else "--stats-port"
                p = pt.Proxy(snap, other, "0")
                try:
                    log = p.logs()
                    st, _ = status_of(p.admin, "/ready")
                    check(f"ports: the default {flag} {default} is skipped when taken (even with "
                          "SO_REUSEPORT): a warning, and the proxy serves",
                          f"address already in use: 0.0.0.0:{default} ({flag})" in log and
                          st == 200, log[-800:])
                finally:
                    p.stop()
            finally:
                if holder is not None:
                    holder.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def big_virtualservice(routes, prefix_len):
    lines = ["apiVersion: networking.istio.io/v1", "kind: VirtualService",
             "metadata: {name: big, namespace: default}", "spec:", '  hosts: ["*"]',
             "  gateways: [gw]", "  http:"]
    for i in range(routes):
        prefix = f"/r{i}/" + "p" * prefix_len
        lines.append(f"  - match: [{{uri: {{prefix: \"{prefix}\"}}}}]")
        lines.append("    route: [{destination: {host: svc-a}}]")
    lines.append('  - route: [{destination: {host: svc-a}}]')
    return "\n".join(lines) + "\n"


def t_xds_limits(up):
    cfg = tempfile.mkdtemp(prefix="skiff-xds-big-")
    op = None
    procs = []
    try:
        xt.write(os.path.join(cfg, "services.yaml"), xt.service_yaml("svc-a", up["a"]))
        gw = xt.gateway_yaml("svc-a").split("---\n")[0]
        xt.write(os.path.join(cfg, "gateway.yaml"), gw)
        # ~4.9 MB of route table: more than gRPC's 4 MiB default receive limit.
        xt.write(os.path.join(cfg, "big.yaml"), big_virtualservice(1600, 3000))
        op = xt.Operator(cfg)
        p = xt.XdsProxy(op.port, "gw-big", "--stats-port", "0", "--readiness-port", "0")
        procs.append(p)
        ok = wait_until(lambda: xt.who(p.port, "/r1599/" + "p" * 3000 + "/x") == "a", 60)
        check("xDS: a route table over gRPC's 4 MiB default arrives and serves",
              ok and status_of(p.admin, "/ready")[0] == 200,
              (xt.who(p.port, "/"), p.logs()[-1500:]))

        small = xt.XdsProxy(op.port, "gw-limited", "--stats-port", "0", "--readiness-port", "0",
                            "--xds-max-response-bytes", str(1 << 20))
        procs.append(small)
        st = wait_until(lambda: "NACKED" in op.status() and "gw-limited" in op.status() and
                        op.status(), 60) or op.status()
        line = [ln for ln in st.splitlines() if "NACKED" in ln]
        check("xDS: a response over --xds-max-response-bytes is NACKed and proxy-status shows it",
              bool(line) and "--xds-max-response-bytes" in st, (st, small.logs()[-1500:]))
        check("/ready: 503 while the proxy never received a complete config (a type was "
              "rejected as too large)",
              status_of(small.admin, "/ready")[0] == 503 and
              "configuration" in status_of(small.admin, "/ready")[1],
              status_of(small.admin, "/ready"))
    finally:
        for p in procs:
            p.stop()
        if op is not None:
            op.stop()
        shutil.rmtree(cfg, ignore_errors=True)

    # Never connected at all.
    dead = pt.free_port()
    p = xt.XdsProxy(dead, "gw-alone", "--stats-port", "0", "--readiness-port", "0")
    try:
        st, body = status_of(p.admin, "/ready")
        check("/ready: 503 while no configuration ever arrived", st == 503, (st, body))
    finally:
        p.stop()


def t_graceful_shutdown(up):
    snap = simple_snapshot(up)
    p = pt.Proxy(snap, "--stats-port", "0", "--readiness-port", "0")
    try:
        idle = socket.create_connection(("127.0.0.1", p.port), timeout=10)  # keep-alive, idle
        idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        pt.recv_response(idle)
        results = {}

        def slow():
            try:
                s = socket.create_connection(("127.0.0.1", p.port), timeout=20)
                s.sendall(b"GET /delay/600 HTTP/1.1\r\nHost: x\r\n\r\n")
                results["slow"] = pt.recv_response(s)[0]
                s.close()
            except Exception as e:  # noqa: BLE001
                results["slow"] = repr(e)

        before = pt.http_get(up["a"], "/count")
        n0 = json.loads(before[2])["requests"]
        t = threading.Thread(target=slow)
        t.start()
        wait_until(lambda: json.loads(pt.http_get(up["a"], "/count")[2])["requests"] > n0, 10)
        started = time.time()
        p.proc.send_signal(signal.SIGTERM)
        refused = wait_until(lambda: not can_connect(p.port), 5, 0.01)
        t.join(timeout=20)
        try:
            rc = p.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            rc = None
        took = time.time() - started
        print(f"     (exit {took:.2f} s after SIGTERM)")
        check("shutdown: SIGTERM lets a request in flight finish (200), refuses new connections "
              "and exits 0 within 2 s",
              results.get("slow") == 200 and refused and rc == 0 and took <= 2.0,
              (results, refused, rc, round(took, 2), p.logs()[-1000:]))
        idle.close()
    finally:
        p.stop()

    p = pt.Proxy(snap, "--stats-port", "0", "--readiness-port", "0")
    try:
        results = {}

        def endless():
            try:
                s = socket.create_connection(("127.0.0.1", p.port), timeout=30)
                s.sendall(b"GET /delay/20000 HTTP/1.1\r\nHost: x\r\n\r\n")
                results["r"] = pt.recv_response(s)[0]
            except Exception as e:  # noqa: BLE001
                results["r"] = type(e).__name__

        n0 = json.loads(pt.http_get(up["a"], "/count")[2])["requests"]
        t = threading.Thread(target=endless)
        t.start()
        wait_until(lambda: json.loads(pt.http_get(up["a"], "/count")[2])["requests"] > n0, 10)
        started = time.time()
        p.proc.send_signal(signal.SIGTERM)
        try:
            rc = p.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            rc = None
        took = time.time() - started
        print(f"     (exit {took:.2f} s after SIGTERM)")
        t.join(timeout=30)
        check("shutdown: a request longer than --drain-time does not hold the exit past 2 s",
              rc == 0 and took <= 2.0, (rc, round(took, 2), results))
    finally:
        p.stop()


def can_connect(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--only", default="")
    ARGS = ap.parse_args()
    pt.ARGS = ARGS
    xt.ARGS = ARGS
    try:
        up = {"a": pt.start_upstream("a")}
        tests = [t_admin_not_blocked, t_readiness_port, t_ready_listener_errors, t_port_sharing,
                 t_xds_limits, t_graceful_shutdown]
        if not ARGS.only or ARGS.only in "t_manifests":
            pt.test(t_manifests)
        for t in tests:
            if ARGS.only and ARGS.only not in t.__name__:
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
