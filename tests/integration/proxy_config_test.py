#!/usr/bin/env python3
"""Debugging like istioctl, against real processes on loopback: file-source operator, an
ingress gateway (state of the world) and the apigateway's sidecar (delta) over xDS, the
coolstore apps.

  * skiffctl proxy-config listeners|routes|clusters|endpoints|all NODE-ID: the tables, found
    through the operator (the proxy reports its admin address) or with --admin; -o json|yaml;
    an endpoint ejected by outlier detection shows FAILED; errors name what is wrong;
  * skiffctl proxy-status: per proxy and type the version sent, ACKed and the operator's
    current one, aligned; an edit changes the operator's version and the proxies follow; a
    rejected version shows NACKED with the old version still ACKed;
  * skiff-proxy --listener-address binds the configured listeners there; the admin port's /
    lists its endpoints; /clusters reports outlier ejections as Envoy does.

Prints 'N passed, N failed'; exits non-zero on failure."""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import coolstore_test as ct  # noqa: E402
import demo_harness as dh  # noqa: E402
import proxy_test as pt  # noqa: E402
import xds_test as xt  # noqa: E402
from proxy_test import check  # noqa: E402

ROOT = ct.ROOT


def skiffctl(*args):
    r = subprocess.run([os.path.join(pt.ARGS.bin_dir, "cli/skiffctl"), *args],
                       capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout, r.stderr


def table(text):
    """Rows of a skiffctl table as dicts keyed by the header's column names, and whether
    every cell starts at its header's column (aligned)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return [], False
    header = lines[0]
    names, starts = [], []
    i = 0
    while i < len(header):
        if header[i] != " " and (i == 0 or header[i - 2:i] == "  "):
            j = header.find("  ", i)
            j = len(header) if j < 0 else j
            names.append(header[i:j])
            starts.append(i)
            i = j
        else:
            i += 1
    rows, aligned = [], True
    for ln in lines[1:]:
        if ln.startswith("  "):  # a note under a row
            continue
        cells = []
        for k, s in enumerate(starts):
            end = starts[k + 1] if k + 1 < len(starts) else len(ln)
            cell = ln[s:end]
            aligned = aligned and (s == 0 or ln[s - 1] == " ") and (not cell or cell[0] != " ")
            cells.append(cell.strip())
        rows.append(dict(zip(names, cells)))
    return rows, aligned


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    args = ap.parse_args()
    pt.ARGS = args
    xt.ARGS = args
    try:
        run(os.path.join(args.bin_dir, "examples", "coolstore", "apps"))
    except Exception:
        check("proxy-config", False, traceback.format_exc())
    finally:
        for proc in pt.PROCS:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    print(f"{pt.RESULTS['passed']} passed, {pt.RESULTS['failed']} failed")
    sys.exit(1 if pt.RESULTS["failed"] else 0)


def wait_until(fn, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.2)
    return fn()


def listens_on(port):
    """The local addresses a TCP socket listens on for `port` (from /proc/net/tcp{,6})."""
    out = set()
    for path, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        for row in open(path).read().splitlines()[1:]:
            cols = row.split()
            addr, p = cols[1].split(":")
            if cols[3] == "0A" and int(p, 16) == port:
                out.add(dh.decode_address(addr, v6))
    return out


def run(apps):
    v1 = ct.App(os.path.join(apps, "coolstore-catalog"), "--version=v1")
    v2 = ct.App(os.path.join(apps, "coolstore-catalog"), "--version=v2")
    sidecar_port = pt.free_port()
    apigw = ct.App(os.path.join(apps, "coolstore-apigateway"), "--proxy",
                   f"http://127.0.0.1:{sidecar_port}")
    config = tempfile.mkdtemp(prefix="skiff-pc-")
    for name in os.listdir(ct.EXAMPLE):
        if name.endswith(".yaml"):
            text = open(os.path.join(ct.EXAMPLE, name)).read()
            text = (text.replace("port: 18081", f"port: {apigw.port}")
                    .replace("port: 18082", f"port: {v1.port}")
                    .replace("port: 18083", f"port: {v2.port}"))
            xt.write(os.path.join(config, name), text)

    def apply(scenario, target):
        shutil.copy(os.path.join(ROOT, "examples", "coolstore-scenarios", scenario),
                    os.path.join(config, target + ".tmp"))
        os.replace(os.path.join(config, target + ".tmp"), os.path.join(config, target))

    op = xt.Operator(config)
    opaddr = f"127.0.0.1:{op.port}"
    # The gateway with --listener-address 127.0.0.1; the sidecar binds what its configuration
    # says (0.0.0.0), to show the flag is what changes it.
    gw = xt.XdsProxy(op.port, "gw-pc", "--role", "gateway", "--stats-port", "0",
                     "--readiness-port", "0", "--listener-address", "127.0.0.1")
    sc = xt.XdsProxy(op.port, "apigateway-v1.coolstore", "--role", "sidecar", "--namespace",
                     "coolstore", "--labels", "app=apigateway,version=v1", "--port-map",
                     f"15001={sidecar_port}", "--xds-delta", "--stats-port", "0",
                     "--readiness-port", "0")

    def gw_answers():
        try:
            return pt.http_get(gw.port, "/api/catalog")[0] == 200
        except OSError:
            return False

    check("the gateway answers through its listener", wait_until(gw_answers, 30))
    check("--listener-address 127.0.0.1: the gateway's listener is bound on 127.0.0.1 only",
          listens_on(gw.port) == {"127.0.0.1"}, listens_on(gw.port))
    check("without it the sidecar's listener is bound where its configuration says, 0.0.0.0",
          listens_on(sidecar_port) == {"0.0.0.0"}, listens_on(sidecar_port))

    # --- The admin port's index.
    s, _, body = pt.http_get(sc.admin, "/")
    text = body.decode()
    check("the admin port's / lists its endpoints",
          s == 200 and all(f"\n{p} " in text for p in ("/ready", "/config_dump", "/clusters",
                                                         "/stats", "/stats/prometheus")), text)

    # --- proxy-status: versions, aligned.
    def status_rows():
        code, out, err = skiffctl("proxy-status", "--operator", opaddr)
        rows, aligned = table(out)
        return code, rows, aligned, out + err

    def all_synced():
        code, rows, aligned, out = status_rows()
        # Two proxies, five types each (secrets, clusters, endpoints, listeners, routes).
        return len(rows) == 10 and all(r["STATE"] == "SYNCED" for r in rows) and (rows, aligned, out)

    got = wait_until(all_synced, 30)
    rows, aligned, out = got if got else ([], False, status_rows()[3])
    check("proxy-status: a row per proxy and type, all SYNCED, in aligned columns",
          len(rows) == 10 and aligned and
          {r["PROXY"] for r in rows} == {"gw-pc", "apigateway-v1.coolstore"} and
          {r["TYPE"] for r in rows} == {"clusters", "endpoints", "listeners", "routes",
                                        "secrets"}, out)
    check("proxy-status: SENT = ACKED = OPERATOR when SYNCED (sotw and delta)",
          rows and all(r["SENT"] == r["ACKED"] == r["OPERATOR"] != "-" for r in rows), out)
    sc_routes = [r for r in rows if r["PROXY"] == "apigateway-v1.coolstore" and r["TYPE"] == "routes"]
    before = sc_routes[0]["OPERATOR"] if sc_routes else None

    # --- proxy-config through the operator.
    code, out, err = skiffctl("proxy-config", "routes", "apigateway-v1.coolstore",
                              "--operator", opaddr)
    rows, aligned = table(out)
    catalog = [r for r in rows if r["VHOST NAME"] == "catalog.coolstore.svc.cluster.local:8080"]
    check("proxy-config routes: name, virtual host, domains, match, virtual service",
          code == 0 and aligned and catalog and catalog[0]["NAME"] == "outbound" and
          catalog[0]["MATCH"] == "/*" and catalog[0]["VIRTUAL SERVICE"] == "catalog.coolstore" and
          catalog[0]["DOMAINS"] == "catalog.coolstore.svc.cluster.local:8080 +3 more", out + err)
    code, out, err = skiffctl("proxy-config", "clusters", "apigateway-v1.coolstore",
                              "--operator", opaddr)
    rows, aligned = table(out)
    check("proxy-config clusters: service, port, subset, direction, type, DestinationRule",
          code == 0 and aligned and
          {"SERVICE FQDN": "catalog.coolstore.svc.cluster.local", "PORT": "8080",
           "SUBSET": "version-v1", "DIRECTION": "outbound", "TYPE": "EDS",
           "DESTINATION RULE": "catalog.coolstore"} in rows and
          {"SERVICE FQDN": "apigateway.coolstore.svc.cluster.local", "PORT": "8080",
           "SUBSET": "-", "DIRECTION": "outbound", "TYPE": "EDS",
           "DESTINATION RULE": "-"} in rows, out + err)
    code, out, err = skiffctl("proxy-config", "listeners", "gw-pc", "--operator", opaddr)
    rows, aligned = table(out)
    check("proxy-config listeners: the configured address and port, and where it is bound",
          code == 0 and rows == [{"NAME": "0.0.0.0_80", "ADDRESS": "0.0.0.0", "PORT": "80",
                                  "PROTOCOL": "HTTP", "DESTINATION": "Route: http.80",
                                  "BOUND": f"127.0.0.1:{gw.port}"}], out + err)
    code, out, err = skiffctl("proxy-config", "endpoints", "--admin", f"127.0.0.1:{sc.admin}")
    rows, aligned = table(out)
    check("proxy-config endpoints --admin HOST:PORT: address, status, outlier check, cluster",
          code == 0 and aligned and
          {"ENDPOINT": f"127.0.0.1:{v1.port}", "STATUS": "HEALTHY", "OUTLIER CHECK": "OK",
           "CLUSTER": "outbound|8080|version-v1|catalog.coolstore.svc.cluster.local"} in rows,
          out + err)
    code, out, err = skiffctl("proxy-config", "all", "gw-pc", "--operator", opaddr)
    check("proxy-config all: the four tables",
          code == 0 and all(f"# {t}\n" in out for t in ("listeners", "routes", "clusters",
                                                       "endpoints")), out + err)
    code, out, err = skiffctl("proxy-config", "clusters", "gw-pc", "--operator", opaddr, "-o", "json")
    try:
        doc = json.loads(out)
    except ValueError:
        doc = None
    check("proxy-config -o json: the clusters as the snapshot has them",
          code == 0 and isinstance(doc, list) and
          [c["name"] for c in doc] == ["outbound|8080||apigateway.coolstore.svc.cluster.local"],
          out + err)
    code, out, err = skiffctl("proxy-config", "all", "apigateway-v1.coolstore", "--operator",
                              opaddr, "-o", "yaml")
    try:
        doc = yaml.safe_load(out)
    except yaml.YAMLError:
        doc = None
    check("proxy-config -o yaml: all four sections, parseable",
          code == 0 and isinstance(doc, dict) and
          {"listeners", "routes", "clusters", "endpoints"} <= set(doc) and
          any(e["port"] == v1.port for c in doc["endpoints"] for e in c["endpoints"]), out[:1500])
    code, out, err = skiffctl("proxy-config", "routes", "no-such-proxy", "--operator", opaddr)
    check("proxy-config: an unknown proxy is an error naming the connected ones",
          code == 1 and "no proxy no-such-proxy is connected" in err and "gw-pc" in err, err)
    code, out, err = skiffctl("proxy-config", "bogus", "gw-pc")
    check("proxy-config: an unknown type is a usage error", code == 2 and "listeners|routes" in err,
          err)

    # --- An edit: the operator's version changes, the proxy follows, the table shows it.
    apply("2-dark-launch.yaml", "catalog-virtualservice.yaml")

    def routes_follow():
        code, rows, aligned, out = status_rows()
        r = [x for x in rows if x["PROXY"] == "apigateway-v1.coolstore" and x["TYPE"] == "routes"]
        return r and r[0]["OPERATOR"] != before and r[0]["STATE"] == "SYNCED" and \
            r[0]["SENT"] == r[0]["ACKED"] == r[0]["OPERATOR"] and out

    out = wait_until(routes_follow, 30)
    check("proxy-status after an edit: a new operator version for routes, sent and ACKed",
          bool(out), status_rows()[3])
    code, out, err = skiffctl("proxy-config", "routes", "apigateway-v1.coolstore",
                              "--operator", opaddr)
    check("proxy-config routes shows the new header match",
          "/* header x-dark-launch=v2" in out, out)

    # A version the gateway rejects: a regex over its program-size limit.
    gwfile = os.path.join(config, "gateway.yaml")
    good = open(gwfile).read()
    xt.write(gwfile, good.replace("prefix: /api", 'regex: "/api/[a-z]{1,80}"'))

    def nacked():
        code, rows, aligned, out = status_rows()
        r = [x for x in rows if x["PROXY"] == "gw-pc" and x["TYPE"] == "routes"]
        return r and r[0]["STATE"] == "NACKED" and (r[0], out)

    got = wait_until(nacked, 30)
    row, out = got if got else ({}, status_rows()[3])
    check("proxy-status: a rejected version is NACKED: sent = the operator's, ACKED the old one,"
          " with the proxy's error under the row",
          row and row["SENT"] == row["OPERATOR"] and row["ACKED"] not in ("-", row["SENT"]) and
          "program size" in out, out)
    xt.write(gwfile, good)
    check("proxy-status: fixed, SYNCED again", wait_until(lambda: all_synced(), 30), status_rows()[3])

    # --- Outlier detection: catalog v1 answers 500 to everything; 3 in a row eject it.
    apply("7-circuit-breaker.yaml", "catalog-destinationrule.yaml")
    apply("1-retries.yaml", "catalog-virtualservice.yaml")
    check("the circuit breaker reaches the sidecar",
          wait_until(lambda: '"consecutive5xxErrors": 3' in
                     pt.http_get(sc.admin, "/config_dump")[2].decode() and
                     '"numRetries": 3' in pt.http_get(sc.admin, "/config_dump")[2].decode(), 30))
    ct.post_json(v1.port, "/blowup", {"active": True, "type": "500", "percentage": 100})
    for _ in range(6):
        try:
            pt.http_get(gw.port, "/api/catalog")
        except OSError:
            pass
    s, _, body = pt.http_get(sc.admin, "/clusters")
    line = [ln for ln in body.decode().splitlines() if f"127.0.0.1:{v1.port}" in ln]
    check("/clusters: the ejected endpoint has Envoy's /failed_outlier_check",
          line and line[0].endswith("::health_flags::/failed_outlier_check"), body.decode())
    code, out, err = skiffctl("proxy-config", "endpoints", "apigateway-v1.coolstore",
                              "--operator", opaddr)
    rows, _ = table(out)
    check("proxy-config endpoints: the ejected endpoint's outlier check is FAILED",
          {"ENDPOINT": f"127.0.0.1:{v1.port}", "STATUS": "HEALTHY", "OUTLIER CHECK": "FAILED",
           "CLUSTER": "outbound|8080|version-v1|catalog.coolstore.svc.cluster.local"} in rows,
          out + err)


if __name__ == "__main__":
    main()
