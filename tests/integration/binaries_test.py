#!/usr/bin/env python3
"""The three binaries as a user runs them: --help, --version, bad flags, and skiffctl /
skiff-proxy on real files. Prints 'N passed, N failed' and exits non-zero on failure."""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ARGS = None
RESULTS = {"passed": 0, "failed": 0}


def run(binary, *args, timeout=30):
    path = os.path.join(ARGS.bin_dir, binary)
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=timeout)


def check(name, cond, detail=""):
    if cond:
        RESULTS["passed"] += 1
        print(f"ok   {name}")
    else:
        RESULTS["failed"] += 1
        print(f"FAIL {name}\n     {detail}")


BINARIES = {"skiff-operator": "operator/skiff-operator", "skiff-proxy": "proxy/skiff-proxy",
            "skiffctl": "cli/skiffctl"}


def test_help_version_flags():
    version = open(os.path.join(ARGS.source, "VERSION")).read().strip()
    for name, rel in BINARIES.items():
        r = run(rel, "--help")
        check(f"{name} --help exits 0 with usage", r.returncode == 0 and "Usage:" in r.stdout,
              r.stdout + r.stderr)
        r = run(rel, "--version")
        check(f"{name} --version prints {version}",
              r.returncode == 0 and r.stdout.strip() == f"{name} {version}", r.stdout + r.stderr)
        r = run(rel, "--no-such-flag")
        check(f"{name} --no-such-flag exits 2 naming the flag",
              r.returncode == 2 and "--no-such-flag" in r.stderr, f"rc={r.returncode} {r.stderr}")
    r = run(BINARIES["skiff-proxy"], "--log-level", "loud")
    check("skiff-proxy --log-level loud exits 2 naming flag and value",
          r.returncode == 2 and "--log-level" in r.stderr and "loud" in r.stderr, r.stderr)
    r = run(BINARIES["skiffctl"], "translate", "--role", "mesh", "--config-dir", ".")
    check("skiffctl translate --role mesh exits 2", r.returncode == 2 and "--role" in r.stderr,
          r.stderr)


def test_validate_and_translate():
    coolstore = os.path.join(ARGS.examples, "coolstore")
    r = run(BINARIES["skiffctl"], "validate", "--strict", "-f", coolstore)
    check("skiffctl validate --strict examples/coolstore (a complete directory) exits 0",
          r.returncode == 0, r.stdout + r.stderr)
    with tempfile.TemporaryDirectory() as d:
        bad = os.path.join(d, "bad.yaml")
        with open(bad, "w") as f:
            f.write("""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: catalog, namespace: shop}
spec:
  hosts: [catalog]
  http:
  - route: [{destination: {host: catalog}}]
    retries: {attempts: 3, perTryTimeout: 2x}
""")
        r = run(BINARIES["skiffctl"], "validate", "-f", bad)
        check("skiffctl validate on a bad duration exits 1 naming resource and path",
              r.returncode == 1 and "VirtualService shop/catalog" in r.stdout and
              'spec.http[0].retries.perTryTimeout: invalid duration "2x"' in r.stdout, r.stdout)
        # An Istio-valid file alone: its Service is elsewhere. A warning, as istioctl's;
        # --strict (a complete directory) makes it an error.
        alone = os.path.join(d, "alone.yaml")
        with open(alone, "w") as f:
            f.write("""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: catalog, namespace: shop}
spec:
  hosts: [catalog]
  http:
  - route: [{destination: {host: catalog, subset: v1}}]
""")
        r = run(BINARIES["skiffctl"], "validate", "-f", alone)
        check("skiffctl validate: an unresolved reference is a warning (exit 0)",
              r.returncode == 0 and "warning: VirtualService shop/catalog: "
              "spec.http[0].route[0].destination.host:" in r.stdout and
              r.stdout.strip().endswith("warning(s)"), r.stdout)
        r = run(BINARIES["skiffctl"], "validate", "--strict", "-f", alone)
        check("skiffctl validate --strict: an unresolved reference is an error (exit 1)",
              r.returncode == 1 and "error: VirtualService shop/catalog: "
              "spec.http[0].route[0].destination.host:" in r.stdout, r.stdout)
        # Several -f, standard input, a directory searched recursively.
        sub = os.path.join(d, "nested", "deeper")
        os.makedirs(sub)
        svc = os.path.join(sub, "svc.yaml")
        with open(svc, "w") as f:
            f.write("apiVersion: v1\nkind: Service\nmetadata: {name: catalog, namespace: shop}\n"
                    "spec: {ports: [{name: http, port: 80}]}\n")
        dr = ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
              "metadata: {name: catalog, namespace: shop}\n"
              "spec: {host: catalog, subsets: [{name: v1, labels: {version: v1}}]}\n")
        r = subprocess.run([os.path.join(ARGS.bin_dir, BINARIES["skiffctl"]), "validate", "--strict", "-f", alone, "-f",
                            os.path.join(d, "nested"), "-f", "-"], input=dr,
                           capture_output=True, text=True, timeout=30)
        check("skiffctl validate -f FILE -f DIR -f - resolves references across all of them",
              r.returncode == 0 and r.stdout.startswith("ok: 3 object(s), 2 of 2 Istio"),
              r.stdout + r.stderr)
        r = subprocess.run([os.path.join(ARGS.bin_dir, BINARIES["skiffctl"]), "validate", "-f", "-"],
                           input="apiVersion: networking.istio.io/v1\nkind: VirtualSevice\n"
                                 "metadata: {name: typo}\n",
                           capture_output=True, text=True, timeout=30)
        check("skiffctl validate: an unknown kind in an Istio group is an error naming the "
              "document", r.returncode == 1 and
              '<stdin> document 1: unknown kind "VirtualSevice"' in r.stdout, r.stdout)
        r = subprocess.run([os.path.join(ARGS.bin_dir, BINARIES["skiffctl"]), "validate", "-f", "-"],
                           input="apiVersion: networking.istio.io/v1\nkind: Sidecar\n"
                                 "metadata: {name: ext, namespace: shop}\n---\n"
                                 "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
                           capture_output=True, text=True, timeout=30)
        check("skiffctl validate: a Sidecar is a warning, and objects skiff ignores count",
              r.returncode == 0 and "warning: Sidecar shop/ext: not served by skiff yet; "
              "ignored  (<stdin> document 1)" in r.stdout and "ok: 2 object(s)" in r.stdout,
              r.stdout)
        r = run(BINARIES["skiffctl"], "translate", "--config-dir", coolstore)
        ok = r.returncode == 0
        snap = json.loads(r.stdout) if ok else {}
        check("skiffctl translate prints a gateway snapshot",
              ok and snap["listeners"][0]["port"] == 80 and
              any(c["name"] == "outbound|8080||apigateway.coolstore.svc.cluster.local"
                  for c in snap["clusters"]), r.stdout[:500] + r.stderr)
        snap_file = os.path.join(d, "snap.json")
        with open(snap_file, "w") as f:
            f.write(r.stdout)
        r = run(BINARIES["skiff-proxy"], "--bootstrap", snap_file, "--check")
        check("skiff-proxy --check accepts skiffctl's snapshot", r.returncode == 0, r.stderr)
        with open(snap_file, "w") as f:
            f.write('{"listeners": [{"port": "eighty"}]}')
        r = run(BINARIES["skiff-proxy"], "--bootstrap", snap_file, "--check")
        check("skiff-proxy --check rejects a broken snapshot naming the file",
              r.returncode == 1 and snap_file in r.stderr, r.stderr)


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--bin-dir", required=True)
    p.add_argument("--examples", required=True)
    ARGS = p.parse_args()
    ARGS.source = os.path.dirname(os.path.abspath(ARGS.examples))
    test_help_version_flags()
    test_validate_and_translate()
    print(f"{RESULTS['passed']} passed, {RESULTS['failed']} failed")
    sys.exit(1 if RESULTS["failed"] else 0)


if __name__ == "__main__":
    main()
