#!/usr/bin/env python3
"""manifests/addons (Prometheus with skiff's console pages, Zipkin) against a real
kube-apiserver + etcd (tests/kube/env.sh), driven with kubectl: the kustomization builds and
applies with strict server-side validation; the ConfigMaps hold exactly the repository's
console pages, library and scrape configuration (the files the local demo serves); the
Deployment mounts the generated ConfigMaps; Prometheus' service account may list and watch
pods and nothing more; the pods skiff's manifests create carry the annotations the scrape
configuration keeps, on the ports the proxies serve.

  addons_test.py --kube-env tests/kube/env.sh [--keep]

Prints PASS/FAIL per check and 'N passed, N failed'; exits non-zero on any failure."""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import crds_test as ct  # noqa: E402

ROOT = ct.ROOT
ADDONS = os.path.join(ROOT, "manifests", "addons")
NS = "skiff-system"
SA = f"system:serviceaccount:{NS}:prometheus"


def expect(cond, msg):
    if not cond:
        raise ct.Failure(msg)


def build(path):
    p = subprocess.run(["kubectl", "kustomize", path], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise ct.Failure(f"kubectl kustomize {path}: {p.stderr.strip()}")
    return [d for d in yaml.safe_load_all(p.stdout) if d]


def check_applies(kube):
    objs = build(ADDONS)
    kinds = sorted(f"{o['kind']}/{o['metadata']['name'].rsplit('-', 1)[0] if o['kind'] == 'ConfigMap' else o['metadata']['name']}"
                   for o in objs)
    expect(kinds == sorted(["Namespace/skiff-system", "ServiceAccount/prometheus",
                            "ClusterRole/skiff-prometheus", "ClusterRoleBinding/skiff-prometheus",
                            "ConfigMap/prometheus-config", "ConfigMap/prometheus-consoles",
                            "ConfigMap/prometheus-console-libraries", "Deployment/prometheus",
                            "Service/prometheus", "Deployment/zipkin", "Service/zipkin"]),
           f"unexpected objects: {kinds}")
    rc, out, err = kube.run("apply", "--validate=strict", "-k", ADDONS)
    expect(rc == 0, f"kubectl apply -k manifests/addons: {err.strip() or out.strip()}")
    for o in objs:
        ns = [] if o["kind"] in ("Namespace", "ClusterRole", "ClusterRoleBinding") else ["-n", NS]
        kube.ok("get", o["kind"].lower(), o["metadata"]["name"], *ns)


def check_configmaps(kube):
    cms = {cm["metadata"]["name"].rsplit("-", 1)[0]: cm for cm in
           json.loads(kube.ok("get", "configmaps", "-n", NS, "-o", "json"))["items"]}
    want = {
        "prometheus-config": os.path.join(ADDONS, "prometheus"),
        "prometheus-consoles": os.path.join(ADDONS, "prometheus", "consoles"),
        "prometheus-console-libraries": os.path.join(ADDONS, "prometheus", "console_libraries"),
    }
    for name, directory in want.items():
        expect(name in cms, f"no ConfigMap {name}-* in {NS}: {sorted(cms)}")
        data = cms[name]["data"]
        files = sorted(f for f in os.listdir(directory)
                       if os.path.isfile(os.path.join(directory, f)))
        expect(sorted(data) == files, f"{name}: {sorted(data)}, expected {files}")
        for f in files:
            expect(data[f] == open(os.path.join(directory, f)).read(),
                   f"{name}: {f} differs from the repository's")
    deploy = json.loads(kube.ok("get", "deployment", "prometheus", "-n", NS, "-o", "json"))
    spec = deploy["spec"]["template"]["spec"]
    mounted = {v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v}
    actual = {cm["metadata"]["name"] for cm in cms.values()}
    expect(mounted <= actual and len(mounted) == 3, f"mounts {mounted}, ConfigMaps {actual}")
    args = spec["containers"][0]["args"]
    mounts = {m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    for flag in ("--web.console.templates=", "--web.console.libraries="):
        path = [a[len(flag):] for a in args if a.startswith(flag)]
        expect(path and path[0] in mounts, f"{flag} {path} is not a mounted directory {mounts}")


def check_rbac(kube):
    def can(*args):
        rc, out, _ = kube.run("auth", "can-i", *args, "--as", SA)
        return out.strip() == "yes"

    expect(can("list", "pods", "--all-namespaces") and can("watch", "pods", "--all-namespaces"),
           "Prometheus cannot list/watch pods")
    for verb, what in (("get", "secrets"), ("list", "configmaps"), ("create", "pods"),
                       ("list", "virtualservices.networking.istio.io")):
        expect(not can(verb, what, "--all-namespaces"), f"Prometheus may {verb} {what}")


def check_scrape_targets(_kube):
    """The scrape configuration keeps pods annotated prometheus.io/scrape=true and scrapes
    the annotated port and path: skiff's operator and gateway pods must say where their
    metrics are, on the ports they serve them."""
    cfg = yaml.safe_load(open(os.path.join(ADDONS, "prometheus", "prometheus.yml")))
    jobs = cfg["scrape_configs"]
    expect(len(jobs) == 1 and jobs[0]["kubernetes_sd_configs"] == [{"role": "pod"}],
           f"expected one pod-discovery job: {jobs}")
    keep = [r for r in jobs[0]["relabel_configs"] if r.get("action") == "keep"]
    expect(keep and keep[0]["source_labels"] ==
           ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"], keep)
    addr = [r for r in jobs[0]["relabel_configs"] if r.get("target_label") == "__address__"][0]
    for o in build(os.path.join(ROOT, "manifests")):
        if o["kind"] != "Deployment":
            continue
        pod = o["spec"]["template"]
        ann = pod["metadata"].get("annotations", {})
        name = o["metadata"]["name"]
        expect(ann.get("prometheus.io/scrape") == "true", f"{name}: not annotated for scraping")
        port = ann["prometheus.io/port"]
        # The address rewrite the job does, on an example pod address.
        rewritten = re.sub("^" + addr["regex"] + "$", addr["replacement"].replace("$", "\\"),
                           f"10.1.2.3:8080;{port}")
        expect(rewritten == f"10.1.2.3:{port}", f"{name}: address rewrite gives {rewritten}")
        c = pod["spec"]["containers"][0]
        ports = {str(p["containerPort"]) for p in c.get("ports", [])}
        expect(port in ports, f"{name}: annotated port {port} is not a container port {ports}")
        path = ann.get("prometheus.io/path")
        serves = {"15090": "/stats/prometheus", "15014": "/metrics"}
        expect(serves.get(port) == path, f"{name}: port {port} with path {path}")
        if port == "15090":
            expect("--stats-port=15090" in c.get("args", []), f"{name}: no --stats-port=15090")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kube-env", required=True, help="path to tests/kube/env.sh")
    ap.add_argument("--keep", action="store_true", help="keep the environment directory")
    ap.add_argument("--build-timeout", type=int, default=3600)
    args = ap.parse_args()
    if shutil.which("kubectl") is None:
        print("kubectl is not installed\n0 passed, 1 failed")
        return 1
    env_sh = os.path.abspath(args.kube_env)

    def env(*a, timeout=180):
        p = subprocess.run([env_sh, *a], capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise ct.Failure(f"env.sh {' '.join(a)} failed ({p.returncode}): {p.stderr.strip()[-3000:]}")
        return p.stdout.strip()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    runner = ct.Runner("")
    work = tempfile.mkdtemp(prefix="skiff-kube-addons-")
    env_dir = os.path.join(work, "env")
    started = False
    try:
        runner.check("the Prometheus scrape job finds skiff's pods where they serve metrics",
                     lambda: check_scrape_targets(None))
        t0 = time.monotonic()
        env("build", timeout=args.build_timeout)
        kubeconfig = env("start", env_dir).splitlines()[-1]
        started = True
        print(f"environment up in {time.monotonic() - t0:.1f}s", flush=True)
        kube = ct.Kube(kubeconfig, work)
        runner.check("kubectl apply -k manifests/addons: every object, strictly validated",
                     lambda: check_applies(kube))
        runner.check("the ConfigMaps hold the repository's console pages, library and config, "
                     "mounted where Prometheus reads them", lambda: check_configmaps(kube))
        runner.check("Prometheus' service account may list and watch pods, nothing more",
                     lambda: check_rbac(kube))
    except ct.Failure as e:
        runner.failed += 1
        print(f"FAIL environment: {e}", flush=True)
    finally:
        if started:
            try:
                env("stop", env_dir, timeout=120)
            except Exception as e:  # noqa: BLE001 - report, keep the logs
                runner.failed += 1
                print(f"FAIL stopping the environment: {e}", flush=True)
        if runner.failed or args.keep:
            print(f"environment directory kept: {env_dir}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{runner.passed} passed, {runner.failed} failed")
    return 1 if runner.failed else 0


if __name__ == "__main__":
    sys.exit(main())
