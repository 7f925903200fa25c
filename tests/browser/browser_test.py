#!/usr/bin/env python3
"""The dashboards and traces a user opens, in a real browser: ./scripts/demo.sh --traffic
(real Prometheus with skiff's console pages, real Zipkin, the proxies at 100 % sampling),
catalog's chaos at 50 %, then headless Chromium (Debian's, driven by playwright-core from
npm, installed by install.sh into a cache outside the repository) opens the Service and Mesh
pages and checks the volume, success-rate and P99 graphs are drawn with data, and finds in
Zipkin's UI a trace with the gateway's and the sidecar's spans (dashboards.js).

The pages are also checked on a second Prometheus that serves the upstream release's asset
layout (Debian's files arranged as prom/prometheus v2 has them, --web.local-assets), which
the add-on in manifests/addons runs.

  browser_test.py --bin-dir build/release --artifacts build/release/test-artifacts/browser

Screenshots land in --artifacts. Prints 'N passed, N failed'; exits non-zero on failure; exits
77 (skipped) with a message when Chromium, Node.js, Java or Prometheus is missing."""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import demo_harness as dh  # noqa: E402

RESULTS = {"passed": 0, "failed": 0}
CHROMIUM = "/usr/bin/chromium"
DEBIAN_ASSETS = "/usr/share/prometheus/web"

# The upstream Prometheus 2.x paths under /classic/static that skiff.lib falls back to, and
# the Debian file each is served from here.
UPSTREAM_LAYOUT = {
    "css/prom_console.css": "static/css/prom_console.css",
    "js/prom_console.js": "static/js/prom_console.js",
    "img/ajax-loader.gif": "static/img/ajax-loader.gif",
    "vendor/rickshaw/rickshaw.min.css": "static/rickshaw/rickshaw.min.css",
    "vendor/rickshaw/rickshaw.min.js": "static/rickshaw/rickshaw.min.js",
    "vendor/rickshaw/vendor/d3.v3.js": "static/d3/d3.min.js",
    "vendor/rickshaw/vendor/d3.layout.min.js": None,  # in d3 v3 itself; upstream ships it apart
    "vendor/js/jquery-3.5.1.min.js": "static/jquery/jquery.min.js",
    "vendor/js/popper.min.js": "static/popper.js/umd/popper.min.js",
    "vendor/bootstrap-4.5.2/css/bootstrap.min.css": "static/bootstrap4/css/bootstrap.min.css",
    "vendor/bootstrap-4.5.2/js/bootstrap.min.js": "static/bootstrap4/js/bootstrap.min.js",
    "vendor/bootstrap4-glyphicons/css/bootstrap-glyphicons.min.css":
        "static/vendor/bootstrap4-glyphicons/css/bootstrap-glyphicons.css",
    "vendor/bootstrap4-glyphicons/fonts": "static/vendor/bootstrap4-glyphicons/fonts",
}


# What skiff.lib loads from Debian's paths first (absent from the upstream layout).
DEBIAN_FIRST = ["d3/d3.min.js", "rickshaw/rickshaw.min.js", "jquery/jquery.min.js",
                "popper.js/umd/popper.min.js", "bootstrap4/js/bootstrap.min.js",
                "rickshaw/rickshaw.min.css", "bootstrap4/css/bootstrap.min.css",
                "vendor/bootstrap4-glyphicons/css/bootstrap-glyphicons.css"]


def check(name, cond, detail=""):
    if cond:
        RESULTS["passed"] += 1
        print(f"PASS {name}", flush=True)
    else:
        RESULTS["failed"] += 1
        print(f"FAIL {name}\n     {str(detail)[:3000]}", flush=True)


def upstream_assets(root):
    """A --web.local-assets directory with the upstream layout only (no Debian path in it)."""
    static = os.path.join(root, "static")
    for rel, src in UPSTREAM_LAYOUT.items():
        dst = os.path.join(static, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if src is None:
            open(dst, "w").close()
        else:
            os.symlink(os.path.join(DEBIAN_ASSETS, src), dst)
    os.symlink(os.path.join(DEBIAN_ASSETS, "templates"), os.path.join(root, "templates"))
    return root


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--artifacts", required=True)
    ap.add_argument("--timeout", type=int, default=180, help="seconds each page may wait for data")
    args = ap.parse_args()
    # ctest's timeout sends SIGTERM: leave through the finally blocks that stop the demo.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    missing = [t for t, ok in (("chromium", os.access(CHROMIUM, os.X_OK)),
                               ("node", shutil.which("node")), ("npm", shutil.which("npm")),
                               ("java", shutil.which("java")),
                               ("prometheus", shutil.which("prometheus"))) if not ok]
    if missing:
        print(f"SKIPPED: {', '.join(missing)} not installed (scripts/bootstrap.sh "
              "--with-test-tools installs them)")
        sys.exit(77)
    started = time.time()
    demo = None
    upstream = None
    try:
        node_modules = subprocess.run([os.path.join(HERE, "install.sh")], check=True,
                                      capture_output=True, text=True, timeout=600).stdout.strip()
        demo = dh.Demo(args.bin_dir, "--traffic")
        traces = demo.wait_line(lambda ln: ln.startswith("Traces: "), 300)
        check("the demo runs, with dashboards and traces", traces is not None, demo.output()[-3000:])
        if traces is None:
            raise RuntimeError("the demo did not print its Zipkin URL")
        status, _ = dh.http(demo.url("CATALOG_V1_PORT", "/blowup"),
                            data=b'{"active":true,"type":"500","percentage":50}', method="POST")
        check("chaos 50 % on catalog v1", status == 200, status)

        # A second Prometheus on the same targets with the upstream asset layout.
        port = dh.free_ports(1)[0]
        udir = tempfile.mkdtemp(prefix="skiff-prom-upstream-")
        log = open(os.path.join(udir, "prometheus.log"), "w")
        upstream = subprocess.Popen(
            ["prometheus", f"--config.file={os.path.join(demo.dir, 'prometheus', 'prometheus.yml')}",
             f"--storage.tsdb.path={os.path.join(udir, 'data')}",
             f"--web.listen-address=127.0.0.1:{port}",
             f"--web.local-assets={upstream_assets(os.path.join(udir, 'web'))}",
             f"--web.console.templates={os.path.join(dh.ROOT, 'manifests/addons/prometheus/consoles')}",
             f"--web.console.libraries={os.path.join(dh.ROOT, 'manifests/addons/prometheus/console_libraries')}"],
            stdout=log, stderr=subprocess.STDOUT)
        cfg = {
            "prometheus": [{"name": "debian", "url": demo.url("PROMETHEUS_PORT")},
                           {"name": "upstream-layout", "url": f"http://127.0.0.1:{port}",
                            # Debian's paths, tried first; their fallbacks must load.
                            "missing": [f"/classic/static/{p}" for p in DEBIAN_FIRST]}],
            "service": dh.SERVICE,
            "gatewayService": "istio-ingressgateway.istio-system",
            "zipkin": demo.url("ZIPKIN_PORT"),
            "artifacts": os.path.abspath(args.artifacts),
            "timeout": args.timeout,
        }
        env = dict(os.environ, NODE_PATH=node_modules)
        proc = subprocess.run(["node", os.path.join(HERE, "dashboards.js"), json.dumps(cfg)],
                              env=env, capture_output=True, text=True,
                              timeout=6 * args.timeout + 120)
        print(proc.stdout, end="", flush=True)
        passed = sum(1 for ln in proc.stdout.splitlines() if ln.startswith("PASS "))
        failed = sum(1 for ln in proc.stdout.splitlines() if ln.startswith("FAIL "))
        RESULTS["passed"] += passed
        RESULTS["failed"] += failed
        check("the browser run ends cleanly with its checks", proc.returncode == (1 if failed else 0)
              and passed > 0, proc.stderr[-3000:])
        print(f"screenshots: {cfg['artifacts']}")
    except Exception:
        check("browser test", False, traceback.format_exc())
    finally:
        if upstream is not None:
            upstream.terminate()
            try:
                upstream.wait(timeout=20)
            except subprocess.TimeoutExpired:
                upstream.kill()
                upstream.wait()
        if demo is not None:
            demo.stop()
            if RESULTS["failed"]:
                print("--- demo output\n" + demo.output()[-3000:])
                for name in ("prometheus.log", "zipkin.log"):
                    print(f"--- {name}\n" + demo.log(name, 1500))
        print(f"took {time.time() - started:.0f} s")
    print(f"{RESULTS['passed']} passed, {RESULTS['failed']} failed")
    sys.exit(1 if RESULTS["failed"] else 0)


if __name__ == "__main__":
    main()
