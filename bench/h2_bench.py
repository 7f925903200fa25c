#!/usr/bin/env python3
"""HTTP/2 and gRPC through skiff-proxy vs nginx, haproxy and h2o, in one run on 127.0.0.1.

h2c: h2load (-c BENCH_H2_CLIENTS, 100 streams per connection) against each proxy, one worker
each, to the same HTTP/1.1 upstream (nginx, `return 200`, 100 bytes). gRPC: h2load POSTing
one gRPC-framed Lookup per request (content-type application/grpc, te: trailers) through
skiff and through nginx's grpc_pass to the same coolstore-stock server. Prints requests/s,
CPU per request (the proxy's utime+stime over the run) and the ratios to skiff. Never fails
on a number; a non-zero exit means the setup failed.

  bench/h2_bench.py --bin-dir build/release [--duration 10] [--proxies skiff,nginx,...]
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / TICK


def tree(pid):
    out = [pid]
    try:
        for child in open(f"/proc/{pid}/task/{pid}/children").read().split():
            out += tree(int(child))
    except OSError:
        pass
    return out


def h2load(url, duration, clients, extra=()):
    r = subprocess.run(["h2load", "-D", str(duration), "-c", str(clients), "-m", "100",
                        "-t", "1", *extra, url], capture_output=True, text=True,
                       timeout=duration + 120)
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", r.stdout)
    ok = re.search(r"(\d+) succeeded, (\d+) failed", r.stdout)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done", r.stdout)
    return (float(m.group(1)) if m else 0.0, int(ok.group(1)) if ok else 0,
            int(ok.group(2)) if ok else 0, int(done.group(1)) if done else 0, r.stdout)


class Bench:
    def __init__(self, args):
        self.args = args
        self.dir = tempfile.mkdtemp(prefix="skiff-h2-bench-")
        self.procs = []

    def spawn(self, argv, name):
        log = open(os.path.join(self.dir, name + ".log"), "w")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def stop(self, p):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def nginx(self, name, server_block):
        conf = os.path.join(self.dir, name + ".conf")
        with open(conf, "w") as f:
            f.write(f"""worker_processes 1; daemon off; pid {self.dir}/{name}.pid;
error_log {self.dir}/{name}.err warn;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000; http2_max_concurrent_streams 128;
{server_block} }}
""")
        return self.spawn(["nginx", "-c", conf, "-p", self.dir], name)

    def upstream(self):
        port = free_port()
        self.nginx("upstream", f"server {{ listen 127.0.0.1:{port}; location / {{ "
                               f"return 200 '{'x' * 99}\\n'; }} }}")
        assert wait_port(port), "upstream nginx did not start"
        return port

    def skiff(self, port, upstream, protocol="HTTP1"):
        snap = {"listeners": [{"name": "0.0.0.0_80", "address": "0.0.0.0", "port": 80,
                               "protocol": "HTTP", "routeTable": "http.80"}],
                "routeTables": [{"name": "http.80", "virtualHosts": [{"name": "vh", "domains": ["*"],
                                 "routes": [{"route": {"clusters": [{"cluster": "up", "weight": 100}]}}]}]}],
                "clusters": [{"name": "up", "service": "up.bench.svc.cluster.local", "port": 80,
                              "protocol": protocol}],
                "endpoints": [{"clusterName": "up", "endpoints": [
                    {"address": "127.0.0.1", "port": upstream, "healthy": True}]}]}
        path = os.path.join(self.dir, f"skiff-{protocol}.json")
        with open(path, "w") as f:
            json.dump(snap, f)
        return self.spawn([os.path.join(self.args.bin_dir, "proxy/skiff-proxy"), "--bootstrap",
                           path, "--concurrency", "1", "--port-map", f"80={port}",
                           "--listener-address", "127.0.0.1", "--admin-port", "0",
                           "--stats-port", "0", "--readiness-port", "0", "--log-level", "warn"],
                          "skiff-" + protocol)

    def peer(self, name, port, upstream, grpc=False):
        if name == "nginx":
            where = f"grpc_pass grpc://127.0.0.1:{upstream};" if grpc else \
                f"proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection '';"
            ups = "" if grpc else f"upstream up {{ server 127.0.0.1:{upstream}; keepalive 64; }}"
            return self.nginx("peer-nginx" + ("-grpc" if grpc else ""),
                              f"{ups} server {{ listen 127.0.0.1:{port} http2; "
                              f"location / {{ {where} }} }}")
        if name == "haproxy":
            conf = os.path.join(self.dir, "haproxy.cfg")
            with open(conf, "w") as f:
                f.write(f"""global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend fe
  bind 127.0.0.1:{port} proto h2
  default_backend be
backend be
  http-reuse always
  server s1 127.0.0.1:{upstream}
""")
            return self.spawn(["haproxy", "-f", conf, "-db"], "haproxy")
        if name == "h2o":
            conf = os.path.join(self.dir, "h2o.conf")
            with open(conf, "w") as f:
                f.write(f"""num-threads: 1
listen:
  host: 127.0.0.1
  port: {port}
hosts:
  default:
    paths:
      /:
        proxy.reverse.url: http://127.0.0.1:{upstream}/
access-log: /dev/null
error-log: {self.dir}/h2o.err
""")
            return self.spawn(["h2o", "-c", conf], "h2o")
        raise ValueError(name)

    def measure(self, label, proc, port, path, extra=()):
        if not wait_port(port):
            print(f"{label}: did not start (see {self.dir})")
            return None
        url = f"http://127.0.0.1:{port}{path}"
        h2load(url, 2, self.args.clients, extra)  # warm-up
        pids = tree(proc.pid)
        c0 = cpu_seconds(pids)
        rps, ok, failed, done, out = h2load(url, self.args.duration, self.args.clients, extra)
        cpu = cpu_seconds(pids) - c0
        self.stop(proc)
        us = cpu / done * 1e6 if done else float("nan")
        return {"name": label, "rps": rps, "ok": ok, "failed": failed, "cpu_us": us}

    def run(self):
        for tool in ("h2load", "nginx"):
            if shutil.which(tool) is None:
                print(f"h2_bench: needs {tool} (Debian: nghttp2-client, nginx)")
                return 2
        rows = []
        up = self.upstream()
        for name in self.args.proxies.split(","):
            if name != "skiff" and shutil.which(name) is None:
                print(f"{name}: not installed, skipped")
                continue
            port = free_port()
            proc = self.skiff(port, up) if name == "skiff" else self.peer(name, port, up)
            r = self.measure(name, proc, port, "/")
            if r:
                rows.append(r)
        self.report("h2c, 100 streams per connection, HTTP/1.1 upstream", rows)
        # gRPC unary: one Lookup per request.
        stock_port = free_port()
        stock = self.spawn([os.path.join(self.args.bin_dir, "examples/coolstore/apps/coolstore-stock"),
                            "--port", str(stock_port), "--log-level", "warn"], "stock")
        if not wait_port(stock_port):
            print("coolstore-stock did not start")
            return 1
        body = os.path.join(self.dir, "lookup.bin")
        msg = b"\x0a\x06329299"  # StockRequest{item_id: "329299"}
        with open(body, "wb") as f:
            f.write(b"\x00" + len(msg).to_bytes(4, "big") + msg)
        extra = ("-d", body, "-H", "content-type: application/grpc", "-H", "te: trailers")
        rows = []
        for name in ("skiff", "nginx"):
            port = free_port()
            proc = self.skiff(port, stock_port, "HTTP2") if name == "skiff" else \
                self.peer("nginx", port, stock_port, grpc=True)
            r = self.measure(name, proc, port, "/coolstore.v1.Stock/Lookup", extra)
            if r:
                rows.append(r)
        self.stop(stock)
        self.report("gRPC unary Lookup calls (coolstore-stock upstream)", rows)
        for p in self.procs:
            self.stop(p)
        return 0

    def report(self, title, rows):
        print(f"\n== {title}: {self.args.duration}s, {self.args.clients} connections x 100 "
              "streams, one worker each")
        skiff = next((r for r in rows if r["name"] == "skiff"), None)
        print(f"{'proxy':10} {'req/s':>10} {'failed':>8} {'CPU us/req':>11} {'skiff/peer rps':>15}")
        for r in rows:
            ratio = skiff["rps"] / r["rps"] if skiff and r["rps"] else float("nan")
            print(f"{r['name']:10} {r['rps']:10.0f} {r['failed']:8d} {r['cpu_us']:11.2f} "
                  f"{ratio:15.2f}")
        peers = [r for r in rows if r["name"] != "skiff" and r["rps"] > 0]
        if skiff and peers:
            best = max(peers, key=lambda r: r["rps"])
            print(f"skiff vs best peer ({best['name']}): {skiff['rps'] / best['rps']:.2f}x "
                  f"req/s, CPU per request {skiff['cpu_us'] / best['cpu_us']:.2f}x")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", default="build/release")
    ap.add_argument("--duration", type=int, default=int(os.environ.get("BENCH_DURATION", "10")))
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--proxies", default="skiff,nginx,haproxy,h2o")
    b = Bench(ap.parse_args())
    try:
        sys.exit(b.run())
    finally:
        for p in b.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


if __name__ == "__main__":
    main()
