#!/usr/bin/env python3
"""The operator's pipeline with the file source, a real gateway proxy over xDS and real
upstreams on 127.0.0.1. The operator polls only every hour (--watch-interval 1h), so what it
notices, inotify told it:

  a saved file is served; a file in a subdirectory created after the start is served;
  saving a file unchanged (or touching it) translates nothing; an EndpointSlice change
  translates nothing, recomputes endpoints once and pushes only endpoints, and the gateway
  serves through it without a failed request.

Prints 'N passed, N failed'; exits non-zero on failure."""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import proxy_test as pt  # noqa: E402
import xds_test as xt  # noqa: E402
from proxy_test import check  # noqa: E402

ARGS = None


class Operator(xt.Operator):
    """The file-source operator, polling only every hour."""

    def start(self):
        self.log = open(self.log_path, "a+")
        self.proc = subprocess.Popen(
            [os.path.join(ARGS.bin_dir, "operator/skiff-operator"), "--config-dir", self.dir,
             "--xds-address", "127.0.0.1", "--xds-port", str(self.port),
             "--metrics-address", "127.0.0.1", "--metrics-port", str(self.metrics),
             "--holdoff", self.holdoff, "--watch-interval", "1h"],
            stdout=self.log, stderr=subprocess.STDOUT)
        pt.PROCS.append(self.proc)
        if not pt.wait_port(self.port) or not pt.wait_port(self.metrics):
            raise RuntimeError("operator did not start: " + self.logs())


def wait(fn, timeout=20):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.02)
    return last


def type_pushes(op):
    body = urllib.request.urlopen(f"http://127.0.0.1:{op.metrics}/metrics", timeout=5).read()
    return {m.group(1): int(m.group(2)) for m in re.finditer(
        r'^skiff_operator_xds_type_pushes_total\{type="(\w+)"\} (\d+)$', body.decode(), re.M)}


def counters(op):
    return (op.metric("skiff_operator_translations_total"),
            op.metric("skiff_operator_config_applies_total"))


def run(up):
    cfg = tempfile.mkdtemp(prefix="skiff-pipeline-")
    xt.write(os.path.join(cfg, "services.yaml"),
             xt.service_yaml("svc-a", up["a"]) + "---\n" + xt.service_yaml("svc-b", up["b"]))
    xt.write(os.path.join(cfg, "gateway.yaml"), xt.gateway_yaml("svc-a"))
    op = Operator(cfg, holdoff="0s")
    gw = xt.XdsProxy(op.port, "gw-pipeline")
    try:
        check("the gateway serves the configuration", wait(lambda: xt.who(gw.port) == "a"),
              gw.logs()[-1500:])
        check("the operator watches the directory with inotify",
              "with inotify" in op.logs(), op.logs()[-1500:])

        # A saved file (written next to it and renamed into place).
        xt.write(os.path.join(cfg, "gateway.yaml"), xt.gateway_yaml("svc-b"))
        check("a saved file is served (noticed without polling)",
              wait(lambda: xt.who(gw.port) == "b"), op.logs()[-1500:])
        # A file written in place, in a directory made after the start.
        os.makedirs(os.path.join(cfg, "teams", "shop"))
        with open(os.path.join(cfg, "teams", "shop", "shop.yaml"), "w") as f:
            f.write(xt.gateway_yaml("svc-a", prefix="/shop").replace("name: web", "name: shop"))
        check("a file in a new subdirectory is served",
              wait(lambda: xt.who(gw.port, "/shop/x") == "a"), op.logs()[-1500:])

        # Unchanged saves and a touch change nothing. Each is waited for until the store
        # has compared what the reload read (skiff_operator_store_unchanged_total), then a
        # real edit is the barrier: one translation, one input set applied, for all of it.
        before = counters(op)
        objects = op.metric("skiff_operator_store_objects")

        def noop(action, what):
            seen = op.metric("skiff_operator_store_unchanged_total")
            action()
            compared = wait(lambda: op.metric("skiff_operator_store_unchanged_total") - seen >=
                            objects)
            check(f"{what}: the reload is compared with the store", compared,
                  (seen, op.metric("skiff_operator_store_unchanged_total"), objects))
        noop(lambda: xt.write(os.path.join(cfg, "gateway.yaml"), xt.gateway_yaml("svc-b")),
             "a file saved unchanged")
        noop(lambda: os.utime(os.path.join(cfg, "services.yaml")), "a file touched")

        def append_newline():
            with open(os.path.join(cfg, "teams", "shop", "shop.yaml"), "a") as f:
                f.write("\n")
        noop(append_newline, "a file rewritten with the same objects")
        xt.write(os.path.join(cfg, "gateway.yaml"), xt.gateway_yaml("svc-a"))
        served = wait(lambda: xt.who(gw.port) == "a")
        after = counters(op)
        check("saving files unchanged translates nothing (then 1 edit: 1 translation, 1 apply)",
              served and after[0] - before[0] == 1 and after[1] - before[1] == 1,
              (before, after))

        # An EndpointSlice change: svc-b's endpoint moves to upstream c.
        before = (counters(op), op.metric("skiff_operator_endpoint_translations_total"),
                  type_pushes(op))
        failures, answers, stop = [], {}, []

        def traffic():
            while not stop:
                got = xt.who(gw.port)
                if isinstance(got, str):
                    answers[got] = answers.get(got, 0) + 1
                else:
                    failures.append(got)
        t = threading.Thread(target=traffic, daemon=True)
        t.start()
        xt.write(os.path.join(cfg, "gateway.yaml"), xt.gateway_yaml("svc-b"))
        wait(lambda: xt.who(gw.port) == "b")
        mid = (counters(op), op.metric("skiff_operator_endpoint_translations_total"),
               type_pushes(op))
        xt.write(os.path.join(cfg, "services.yaml"),
                 xt.service_yaml("svc-a", up["a"]) + "---\n" + xt.service_yaml("svc-b", up["c"]))
        served = wait(lambda: xt.who(gw.port) == "c")
        wait(lambda: type_pushes(op).get("ClusterLoadAssignment", 0) >
             mid[2].get("ClusterLoadAssignment", 0))
        stop.append(True)
        t.join(timeout=30)
        after = (counters(op), op.metric("skiff_operator_endpoint_translations_total"),
                 type_pushes(op))
        pushed = {k: after[2].get(k, 0) - mid[2].get(k, 0) for k in after[2]}
        check("an EndpointSlice change is served", served, xt.who(gw.port))
        check("an EndpointSlice change translates no route (translations unchanged, one "
              "endpoint update)", after[0][0] == mid[0][0] and after[1] - mid[1] == 1,
              (before, mid, after))
        check("an EndpointSlice change pushes only endpoints, once",
              pushed == {"Cluster": 0, "ClusterLoadAssignment": 1, "Listener": 0,
                         "RouteTable": 0, "Secret": 0}, pushed)
        check("the gateway serves through a route edit and an EndpointSlice change (no failed "
              "request)", not failures and set(answers) <= {"a", "b", "c"} and "c" in answers,
              (failures[:5], answers))
    finally:
        gw.stop()
        op.stop()
        shutil.rmtree(cfg, ignore_errors=True)


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ARGS = ap.parse_args()
    pt.ARGS = xt.ARGS = ARGS
    try:
        up = {n: pt.start_upstream(n) for n in ("a", "b", "c")}
        run(up)
    except Exception:
        check("pipeline scenario", False, traceback.format_exc())
    finally:
        for proc in pt.PROCS:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    print(f"{pt.RESULTS['passed']} passed, {pt.RESULTS['failed']} failed")
    sys.exit(1 if pt.RESULTS["failed"] else 0)


if __name__ == "__main__":
    main()
