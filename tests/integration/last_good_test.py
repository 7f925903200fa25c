#!/usr/bin/env python3
"""A bad edit never changes traffic: the operator (file source) with a real proxy over xDS
and real upstreams on 127.0.0.1.

  edit a VirtualService to an invalid version -> the proxy keeps routing as before; the
  error shows in `skiffctl status` (with the field path), the operator log and the metric
  skiff_operator_config_errors; fix it -> the new version is served; a syntax error or a
  kind typo in the file -> everything in it keeps its last good version; delete it -> its
  routes are gone; an Istio kind skiff does not serve -> a warning, nothing breaks; an
  invalid resource that was never valid -> not served, shown as such.

Prints 'N passed, N failed'; exits non-zero on failure."""
import argparse
import os
import re
import shutil
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


def vs(dest, timeout="5s", name="web", prefix="/"):
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{{uri: {{prefix: "{prefix}"}}}}]
    route: [{{destination: {{host: {dest}}}}}]
    timeout: {timeout}
"""


GATEWAY = """apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 9000, name: grpc-web, protocol: GRPC-WEB}
    hosts: ["*"]
"""


def status(op):
    r = subprocess.run([os.path.join(ARGS.bin_dir, "cli/skiffctl"), "status", "--operator",
                        f"127.0.0.1:{op.port}"], capture_output=True, text=True, timeout=20)
    return r.returncode, r.stdout + r.stderr


def metrics(op):
    return urllib.request.urlopen(f"http://127.0.0.1:{op.metrics}/metrics", timeout=5).read().decode()


def wait(fn, timeout=20):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.05)
    return last


def applies(op):
    return op.metric("skiff_operator_config_applies_total") or 0


def run(up):
    cfg = tempfile.mkdtemp(prefix="skiff-lastgood-")
    xt.write(os.path.join(cfg, "services.yaml"),
             xt.service_yaml("svc-a", up["a"]) + "---\n" + xt.service_yaml("svc-b", up["b"]))
    xt.write(os.path.join(cfg, "gateway.yaml"), GATEWAY)
    web = os.path.join(cfg, "web.yaml")
    xt.write(web, vs("svc-a"))
    op = xt.Operator(cfg)
    proxy = xt.XdsProxy(op.port, "gw-lastgood")
    try:
        check("a valid VirtualService is served", wait(lambda: xt.who(proxy.port) == "a"),
              proxy.logs()[-1000:])
        rc, out = status(op)
        check("skiffctl status: no errors, exit 0", rc == 0 and "ok: no configuration errors" in out,
              out)

        # An edit to an invalid version (and to another destination): traffic unchanged.
        before = applies(op)
        pushes = op.metric("skiff_operator_xds_pushes_total")
        xt.write(web, vs("svc-b", timeout="5x"))
        wait(lambda: applies(op) > before)
        # The input set was applied and produced the same snapshot: nothing was pushed.
        check("an edit to an invalid version does not change traffic",
              op.metric("skiff_operator_xds_pushes_total") == pushes and
              all(xt.who(proxy.port) == "a" for _ in range(10)),
              (pushes, op.metric("skiff_operator_xds_pushes_total")))
        rc, out = status(op)
        check("skiffctl status names the resource, the field path and the version served",
              rc == 1 and "VirtualService default/web: INVALID" in out and
              'spec.http[0].timeout: invalid duration "5x"' in out and
              "serving its last valid version" in out, out)
        m = metrics(op)
        check("metric skiff_operator_config_errors{kind,namespace,name}",
              re.search(r'^skiff_operator_config_errors\{kind="VirtualService",namespace="default",'
                        r'name="web",served="last-good"\} 1$', m, re.M) is not None,
              [l for l in m.splitlines() if "config_errors" in l])
        check("the operator logs the error with its path",
              re.search(r"VirtualService default/web: invalid \(.*web.yaml document 1\): "
                        r"spec.http\[0\].timeout: invalid duration \"5x\"; its last valid "
                        r"version .* is still served", op.logs()) is not None, op.logs()[-1500:])

        # Fixed: the new version is served.
        xt.write(web, vs("svc-b"))
        check("once fixed, the new version is served", wait(lambda: xt.who(proxy.port) == "b"))
        check("... and the error is gone", wait(lambda: status(op)[0] == 0), status(op)[1])

        # A syntax error, then a kind typo, in the file: everything in it stays.
        before = applies(op)
        pushes = op.metric("skiff_operator_xds_pushes_total")
        xt.write(web, vs("svc-a").replace("http:\n", "http: [\n"))
        wait(lambda: applies(op) > before)
        rc, out = status(op)
        check("a syntax error in the file keeps its resources' last good versions",
              op.metric("skiff_operator_xds_pushes_total") == pushes and
              xt.who(proxy.port) == "b" and rc == 1 and "document error: " in out and
              "web.yaml document 1: line" in out and "kept: VirtualService default/web" in out, out)
        before = applies(op)
        xt.write(web, vs("svc-a").replace("kind: VirtualService", "kind: VirtualSevice"))
        wait(lambda: applies(op) > before)
        rc, out = status(op)
        check("a kind typo is an error naming the document, and does not delete the resource",
              op.metric("skiff_operator_xds_pushes_total") == pushes and
              xt.who(proxy.port) == "b" and
              'web.yaml document 1: unknown kind "VirtualSevice" in networking.istio.io/v1 '
              '(did you mean VirtualService?)' in out, out)

        # An Istio kind skiff does not serve: a warning; nothing else changes.
        xt.write(os.path.join(cfg, "egress.yaml"), """apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec: {egress: [{hosts: ["./*"]}]}
""")
        check("a Sidecar (not served yet) is a warning in the log, not an error",
              wait(lambda: "Sidecar default/default: not served by skiff yet; ignored" in
                   op.logs()), op.logs()[-800:])

        # A resource that was never valid is not served, and says so.
        xt.write(os.path.join(cfg, "new.yaml"), vs("svc-a", timeout="soon", name="fresh",
                                                    prefix="/fresh"))
        check("an invalid resource without a valid version is not served",
              wait(lambda: "VirtualService default/fresh: INVALID" in status(op)[1]) and
              "not served: it has no earlier valid version" in status(op)[1] and
              xt.who(proxy.port, "/fresh") == "b", status(op)[1])

        unsupported = ("Gateway default/gw: the resource is valid, but skiff does not serve all "
                       "of it: spec.servers[1]: GRPC-WEB servers are not served by skiff yet")
        check("a Gateway server skiff does not serve is a warning in the log at every load",
              op.logs().count(unsupported) >= 5, op.logs().count(unsupported))

        # Deleting the file (now valid again) removes the routes.
        xt.write(web, vs("svc-a"))
        wait(lambda: xt.who(proxy.port) == "a")
        os.remove(web)
        os.remove(os.path.join(cfg, "new.yaml"))
        check("only deletion removes the routes", wait(lambda: xt.who(proxy.port) == 404),
              xt.who(proxy.port))
    finally:
        proxy.stop()
        op.stop()
        shutil.rmtree(cfg, ignore_errors=True)


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ARGS = ap.parse_args()
    pt.ARGS = ARGS
    xt.ARGS = ARGS
    try:
        up = {"a": pt.start_upstream("a"), "b": pt.start_upstream("b")}
        run(up)
    except Exception:
        check("last good scenario", False, traceback.format_exc())
    finally:
        for proc in pt.PROCS:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    print(f"{pt.RESULTS['passed']} passed, {pt.RESULTS['failed']} failed")
    sys.exit(1 if pt.RESULTS["failed"] else 0)


if __name__ == "__main__":
    main()
