#!/usr/bin/env python3
"""skiff-operator's operational surfaces as real processes on 127.0.0.1 (issue #12):

  no silent port sharing: a second operator on the same --xds-port or --metrics-port exits 1
  naming the address and the flag (gRPC's SO_REUSEPORT is off);
  the HTTP port (:15014): a 1 MB header is answered 431, a head that never completes 408,
  10,000 slow connections exhaust neither memory nor file descriptors and /healthz and
  /metrics stay answered;
  the xDS snapshot cache is bounded: groups without a connected proxy are evicted and
  --max-proxy-groups caps the rest, so a hostile client opening streams with ever new labels
  (xds_flood) cannot grow the operator's memory (RSS from /proc, the cache-size metric);
  graceful shutdown: SIGTERM stops the operator within 2 s with proxies connected.

Prints 'N passed, N failed'; exits non-zero on failure."""
import argparse
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import proxy_test as pt  # noqa: E402
import xds_test as xt  # noqa: E402
from proxy_test import check  # noqa: E402

ARGS = None


def operator_bin():
    return os.path.join(ARGS.bin_dir, "operator/skiff-operator")


def wait_until(fn, timeout=20, interval=0.05):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    return last


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def get(port, path, timeout=30):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)


def metric(port, name):
    st, body = get(port, "/metrics")
    m = re.search(rf"^{name} (\d+)$", body or "", re.M)
    return int(m.group(1)) if st == 200 and m else None


class Op(xt.Operator):
    """The file-source operator with extra flags and environment."""

    def __init__(self, config_dir, extra=(), env=None):
        self.extra = list(extra)
        self.env = env
        super().__init__(config_dir)

    def start(self):
        self.log = open(self.log_path, "a+")
        self.proc = subprocess.Popen(
            [operator_bin(), "--config-dir", self.dir, "--xds-address", "127.0.0.1",
             "--xds-port", str(self.port), "--metrics-address", "127.0.0.1", "--metrics-port",
             str(self.metrics), "--holdoff", "0s", "--watch-interval", "100ms", *self.extra],
            stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
        pt.PROCS.append(self.proc)
        if not pt.wait_port(self.port) or not pt.wait_port(self.metrics):
            raise RuntimeError("operator did not start: " + self.logs())


def run_until_exit(args, timeout=30):
    log = tempfile.TemporaryFile(mode="w+")
    p = subprocess.Popen([operator_bin(), *args], stdout=log, stderr=subprocess.STDOUT)
    pt.PROCS.append(p)
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        rc = None
        p.kill()
        p.wait()
    log.seek(0)
    return rc, log.read()


def big_virtualservice(routes, prefix_len):
    lines = ["apiVersion: networking.istio.io/v1", "kind: VirtualService",
             "metadata: {name: big, namespace: default}", "spec:", '  hosts: ["*"]',
             "  gateways: [gw]", "  http:"]
    for i in range(routes):
        lines.append(f"  - match: [{{uri: {{prefix: \"/r{i}/{'p' * prefix_len}\"}}}}]")
        lines.append("    route: [{destination: {host: svc-a}}]")
    return "\n".join(lines) + "\n"


def config_dir(up_port, routes=0):
    d = tempfile.mkdtemp(prefix="skiff-opops-")
    xt.write(os.path.join(d, "services.yaml"), xt.service_yaml("svc-a", up_port))
    xt.write(os.path.join(d, "gateway.yaml"), xt.gateway_yaml("svc-a"))
    if routes:
        xt.write(os.path.join(d, "big.yaml"), big_virtualservice(routes, 200))
    return d


# ---------------------------------------------------------------------------------------

def t_ports(up):
    d = config_dir(up["a"])
    op = Op(d)
    try:
        rc, log = run_until_exit(["--config-dir", d, "--xds-address", "127.0.0.1", "--xds-port",
                                  str(op.port), "--metrics-port", "0"])
        want = f"address already in use: 127.0.0.1:{op.port} (--xds-port)"
        check("ports: a second operator on the same --xds-port exits 1: "
              "'address already in use: 127.0.0.1:PORT (--xds-port)' (no SO_REUSEPORT join)",
              rc == 1 and want in log, (rc, log[-1000:]))
        rc, log = run_until_exit(["--config-dir", d, "--xds-address", "127.0.0.1", "--xds-port",
                                  str(pt.free_port()), "--metrics-address", "127.0.0.1",
                                  "--metrics-port", str(op.metrics)])
        want = f"address already in use: 127.0.0.1:{op.metrics} (--metrics-port)"
        check("ports: a second operator on the same --metrics-port exits 1 naming it",
              rc == 1 and want in log, (rc, log[-1000:]))
    finally:
        op.stop()
        shutil.rmtree(d, ignore_errors=True)


def t_http_limits(up):
    d = config_dir(up["a"])
    op = Op(d)
    pid = op.proc.pid
    held = []
    try:
        st, _ = get(op.metrics, "/healthz")
        check("http: /healthz answers 200 (liveness)", st == 200, st)

        s = socket.create_connection(("127.0.0.1", op.metrics), timeout=30)
        try:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) +
                      b"\r\n\r\n")
        except OSError:
            pass
        try:
            status, _, _ = pt.recv_response(s)
        except (OSError, ValueError) as e:
            status = repr(e)
        check("http: a 1 MB request header is answered 431 and the connection closed",
              status == 431 and pt.closed_by_peer(s, timeout=20), status)
        s.close()

        s = socket.create_connection(("127.0.0.1", op.metrics), timeout=60)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        started = time.time()
        try:
            status, _, _ = pt.recv_response(s)
        except (OSError, ValueError) as e:
            status = repr(e)
        took = time.time() - started
        check("http: a head that never completes is answered 408 (header timeout) and closed",
              status == 408 and pt.closed_by_peer(s, timeout=20), (status, round(took, 1)))
        s.close()

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 10000
        if soft < want + 200:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, want + 500), hard))
        rss0 = rss_kb(pid)
        fds0 = fds(pid)
        peak_fds = fds0
        peak_rss = rss0
        opened = 0
        for i in range(want):
            try:
                c = socket.create_connection(("127.0.0.1", op.metrics), timeout=10)
                c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                held.append(c)
                opened += 1
            except OSError:
                break
            if i % 500 == 0:
                peak_fds = max(peak_fds, fds(pid))
                peak_rss = max(peak_rss, rss_kb(pid))
        live, _ = get(op.metrics, "/healthz", timeout=30)
        mst, mbody = get(op.metrics, "/metrics", timeout=30)
        peak_fds = max(peak_fds, fds(pid))
        peak_rss = max(peak_rss, rss_kb(pid))
        print(f"     ({opened} slow connections: operator fds {fds0} -> {peak_fds}, "
              f"RSS +{peak_rss - rss0} KB)")
        check("http: 10,000 slow connections: /healthz and /metrics stay answered, the "
              "operator's fds stay bounded (< 600) and RSS grows < 32 MB",
              opened == want and live == 200 and mst == 200 and peak_fds < 600 and
              peak_rss - rss0 < 32 * 1024,
              dict(opened=opened, healthz=live, metrics=mst, fds=(fds0, peak_fds),
                   rss_growth_kb=peak_rss - rss0))
    finally:
        for c in held:
            c.close()
        op.stop()
        shutil.rmtree(d, ignore_errors=True)


def flood(op, *args, hold=False, timeout=600):
    cmd = [ARGS.flood, "--operator", f"127.0.0.1:{op.port}", *args]
    if hold:
        cmd.append("--hold")
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    pt.PROCS.append(p)
    return p


def t_snapshot_cache(up):
    d = config_dir(up["a"], routes=300)
    env = dict(os.environ)
    # Under AddressSanitizer freed memory sits in a quarantine (256 MB by default) before it
    # is reused, which would hide whether the cache frees anything: keep it small.
    env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=8").lstrip(":")
    op = Op(d, env=env)
    pid = op.proc.pid
    try:
        gw = xt.XdsProxy(op.port, "gw-real", "--stats-port", "0", "--readiness-port", "0")
        ok = wait_until(lambda: xt.who(gw.port, "/r0/" + "p" * 200) == "a", 60)
        check("cache: a real gateway is served", ok, gw.logs()[-800:])
        # Warm up: one flood round, so allocator pools exist before the baseline.
        f = flood(op, "--prefix", "warm", "--streams", "100", "--concurrency", "20")
        f.communicate(timeout=600)
        wait_until(lambda: metric(op.metrics, "skiff_operator_xds_proxy_groups") == 1, 30)
        rss0 = rss_kb(pid)
        f = flood(op, "--prefix", "churn", "--streams", "1500", "--concurrency", "20")
        peak = rss0
        while f.poll() is None:
            peak = max(peak, rss_kb(pid))
            time.sleep(0.2)
        out = f.stdout.read()
        groups = wait_until(
            lambda: metric(op.metrics, "skiff_operator_xds_proxy_groups") == 1 and 1, 30)
        peak = max(peak, rss_kb(pid))
        served = re.search(r'"served": (\d+)', out)
        print(f"     (flood: RSS {rss0} KB -> peak {peak} KB, +{peak - rss0} KB)")
        check("cache: 1,500 streams with distinct labels (20 at a time) leave only the real "
              "gateway's group cached and grow RSS < 48 MB",
              served and int(served.group(1)) == 1500 and groups and
              peak - rss0 < 48 * 1024,
              dict(out=out.strip(), groups=metric(op.metrics, "skiff_operator_xds_proxy_groups"),
                   rss_growth_kb=peak - rss0))
        check("cache: the real gateway still serves after the flood",
              xt.who(gw.port, "/r1/" + "p" * 200) == "a")
        gw.stop()
    finally:
        op.stop()

    op = Op(d, extra=["--max-proxy-groups", "50"], env=env)
    try:
        f = flood(op, "--prefix", "hold", "--streams", "200", "--concurrency", "20", hold=True)
        line = f.stdout.readline()
        groups = metric(op.metrics, "skiff_operator_xds_proxy_groups")
        st = op.status()
        check("cache: --max-proxy-groups 50 with 200 held streams of distinct groups: 50 "
              "served, 150 refused (RESOURCE_EXHAUSTED), 50 groups cached",
              "served=50 " in line and "refused=150 " in line and groups == 50,
              (line, groups, st[-500:]))
        f.stdin.close()
        out = f.stdout.read()
        f.wait(timeout=60)
        check("cache: when the streams close their groups are evicted",
              wait_until(lambda: metric(op.metrics, "skiff_operator_xds_proxy_groups") == 0, 30),
              (out, metric(op.metrics, "skiff_operator_xds_proxy_groups")))
        gw = xt.XdsProxy(op.port, "gw-after", "--stats-port", "0", "--readiness-port", "0")
        check("cache: a proxy connects again once groups were evicted",
              wait_until(lambda: xt.who(gw.port, "/r2/" + "p" * 200) == "a", 60),
              gw.logs()[-800:])
        gw.stop()
    finally:
        op.stop()
        shutil.rmtree(d, ignore_errors=True)


def t_shutdown(up):
    d = config_dir(up["a"])
    op = Op(d)
    held = []
    try:
        gw = xt.XdsProxy(op.port, "gw-shutdown", "--stats-port", "0", "--readiness-port", "0")
        wait_until(lambda: xt.who(gw.port, "/") == "a", 30)
        for _ in range(20):  # slow clients on the metrics port
            c = socket.create_connection(("127.0.0.1", op.metrics), timeout=5)
            c.sendall(b"GET /metrics HTTP/1.1\r\n")
            held.append(c)
        f = flood(op, "--prefix", "bye", "--streams", "100", "--concurrency", "10", hold=True)
        line = f.stdout.readline()  # 100 more streams open
        started = time.time()
        op.proc.send_signal(signal.SIGTERM)
        try:
            rc = op.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            rc = None
        took = time.time() - started
        print(f"     (exit {took:.2f} s after SIGTERM)")
        f.stdin.close()
        f.wait(timeout=60)
        check("shutdown: SIGTERM stops the operator (a proxy and 100 more xDS streams "
              "connected, slow HTTP clients open) with exit 0 within 2 s",
              rc == 0 and took <= 2.0 and "served=100 " in line,
              (rc, round(took, 2), line, op.logs()[-800:]))
        check("shutdown: the proxy keeps serving its last config",
              xt.who(gw.port, "/") == "a")
        gw.stop()
    finally:
        for c in held:
            c.close()
        op.stop()
        shutil.rmtree(d, ignore_errors=True)


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--flood", required=True, help="the xds_flood test tool")
    ap.add_argument("--only", default="")
    ARGS = ap.parse_args()
    pt.ARGS = ARGS
    xt.ARGS = ARGS
    try:
        up = {"a": pt.start_upstream("a")}
        for t in (t_ports, t_http_limits, t_snapshot_cache, t_shutdown):
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
