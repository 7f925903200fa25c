#!/usr/bin/env python3
"""Sidecar injection with a real kube-apiserver + etcd (tests/kube/env.sh) and the real
kubectl: the API server calls skiff-operator's POST /inject over TLS (the
MutatingWebhookConfiguration of manifests/injection.yaml, with a URL client config).

  the leader writes its CA into both webhooks' caBundle; a Pod created in a namespace
  labelled istio-injection=enabled gets skiff-init (first) and skiff-proxy, the Prometheus
  and status annotations, rewritten probes; the label or the annotation
  sidecar.istio.io/inject "false" opts out; a pod labelled sidecar.istio.io/inject=true is
  injected in a namespace without the label, and nothing else there is; what
  `skiffctl inject` makes of a manifest is exactly what the webhook makes of it (both as the
  API server stores them: server-side dry runs), and its output is not injected again;
  with the operator down, pods in other namespaces are still created while a labelled
  namespace refuses them (failurePolicy Fail).

The test env has no kube-controller-manager (tests/kube/README.md), so no Deployment creates
pods here: the tests create Pods, and a Deployment's pod template is injected by skiffctl
inject (unit tests). Prints 'N passed, N failed'; exits non-zero on failure."""
import argparse
import difflib
import json
import os
import subprocess
import sys
import tempfile
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, HERE)
import operator_test as ot  # noqa: E402
import proxy_test as pt  # noqa: E402
import xds_test as xt  # noqa: E402
from proxy_test import check  # noqa: E402

CONFIG = "skiff-test-injection"
VALIDATION = "skiff-test-validation-inj"
IMAGE = "registry.example/skiff-proxy:test"
XDS = "skiff-operator.skiff-system.svc:15010"


def webhook_configs(port):
    """manifests/injection.yaml (and webhook.yaml) with URL client configs: the API server
    here has no Services to route to."""
    with open(os.path.join(ROOT, "manifests", "injection.yaml")) as f:
        inj = f.read()
    service = "    service: {name: skiff-operator, namespace: skiff-system, path: /inject, port: 15017}"
    assert inj.count(service) == 2
    inj = inj.replace("name: skiff-injection", f"name: {CONFIG}").replace(
        service, f"    url: https://127.0.0.1:{port}/inject")
    with open(os.path.join(ROOT, "manifests", "webhook.yaml")) as f:
        val = f.read()
    val = val.replace("name: skiff-validation", f"name: {VALIDATION}").replace(
        "    service: {name: skiff-operator, namespace: skiff-system, path: /validate, port: 15017}",
        f"    url: https://127.0.0.1:{port}/validate")
    return inj, val


def ca_bundles(kube):
    r = kube.kubectl("get", "mutatingwebhookconfiguration", CONFIG, "-o", "json", check_rc=False)
    if r.returncode != 0:
        return []
    return [w.get("clientConfig", {}).get("caBundle") for w in json.loads(r.stdout)["webhooks"]]


def pod_yaml(name, ns, labels=None, annotations=None):
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {"app": "catalog"},
                     "annotations": annotations or {}},
        "spec": {"containers": [{
            "name": "catalog", "image": "coolstore-catalog:1",
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}},
            "livenessProbe": {"tcpSocket": {"port": 8080}}}]}})


def create(kube, text, *extra):
    return kube.kubectl("create", "-f", "-", "-o", "json", *extra, input=text, check_rc=False)


def names(pod, field):
    return [c["name"] for c in pod["spec"].get(field, [])]


def comparable(pod):
    """The pod as stored, without what the API server makes up per object."""
    meta = pod["metadata"]
    for k in ("uid", "creationTimestamp", "resourceVersion", "managedFields", "generation"):
        meta.pop(k, None)
    pod.pop("status", None)
    return pod


def run(kube):
    port = pt.free_port()
    inj, val = webhook_configs(port)
    kube.apply(inj)
    kube.apply(val)
    for ns, labels in (("shop-inj", {"istio-injection": "enabled"}), ("plain", {})):
        kube.apply(json.dumps({"apiVersion": "v1", "kind": "Namespace",
                               "metadata": {"name": ns, "labels": labels}}))
    op = ot.KubeOperator(["--kubeconfig", kube.kubeconfig, "--webhook-port", str(port),
                          "--webhook-address", "127.0.0.1", "--webhook-config", VALIDATION,
                          "--injection-webhook-config", CONFIG, "--proxy-image", IMAGE,
                          "--injection-xds-address", XDS])
    check("the leader writes its CA into the caBundle of both injection webhooks",
          ot.wait_until(lambda: (lambda b: len(b) == 2 and all(b) and b[0] == b[1])(
              ca_bundles(kube)), 40), (ca_bundles(kube), op.logs()[-2000:]))

    r = ot.wait_until(lambda: (lambda x: x if x.returncode == 0 else None)(
        create(kube, pod_yaml("catalog-1", "shop-inj"))), 40) or create(
        kube, pod_yaml("catalog-1", "shop-inj"))
    pod = json.loads(r.stdout) if r.returncode == 0 else {}
    check("a Pod created in a namespace labelled istio-injection=enabled is created, with "
          "skiff-init first and skiff-proxy added by the webhook",
          pod and names(pod, "initContainers") == ["skiff-init"] and
          names(pod, "containers") == ["catalog", "skiff-proxy"], r.stdout[-1500:] + r.stderr)
    if not pod:
        return
    proxy = pod["spec"]["containers"][1]
    init = pod["spec"]["initContainers"][0]
    ann = pod["metadata"]["annotations"]
    check("... with the operator's image, xDS address, uid 1337 and NET_ADMIN for skiff-init",
          proxy["image"] == IMAGE and init["image"] == IMAGE and f"--xds={XDS}" in proxy["args"]
          and proxy["securityContext"]["runAsUser"] == 1337 and
          "NET_ADMIN" in init["securityContext"]["capabilities"]["add"], (proxy, init))
    check("... the Prometheus scrape annotations and the injection status",
          ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == "15090"
          and ann.get("prometheus.io/path") == "/stats/prometheus" and
          "skiff-proxy" in ann.get("sidecar.istio.io/status", ""), ann)
    app = pod["spec"]["containers"][0]
    check("... and its probes rewritten to the sidecar's 15021",
          app["readinessProbe"]["httpGet"]["path"] == "/app-health/catalog/readyz" and
          app["readinessProbe"]["httpGet"]["port"] == 15021 and
          app["livenessProbe"]["httpGet"]["path"] == "/app-health/catalog/livez", app)

    # Opt-outs.
    r = create(kube, pod_yaml("catalog-2", "shop-inj",
                              labels={"app": "catalog", "sidecar.istio.io/inject": "false"}))
    check('the label sidecar.istio.io/inject: "false" opts out (not sent to the webhook)',
          r.returncode == 0 and names(json.loads(r.stdout), "containers") == ["catalog"],
          r.stdout[-800:] + r.stderr)
    r = create(kube, pod_yaml("catalog-3", "shop-inj",
                              annotations={"sidecar.istio.io/inject": "false"}))
    check('the annotation sidecar.istio.io/inject: "false" opts out too',
          r.returncode == 0 and names(json.loads(r.stdout), "containers") == ["catalog"],
          r.stdout[-800:] + r.stderr)
    r = create(kube, pod_yaml("web-1", "plain"))
    check("a namespace without the label: pods are not injected",
          r.returncode == 0 and names(json.loads(r.stdout), "containers") == ["catalog"],
          r.stdout[-800:] + r.stderr)
    r = create(kube, pod_yaml("web-2", "plain",
                              labels={"app": "web", "sidecar.istio.io/inject": "true"}))
    check('... but a pod labelled sidecar.istio.io/inject: "true" there is',
          r.returncode == 0 and names(json.loads(r.stdout), "containers") == ["catalog", "skiff-proxy"],
          r.stdout[-800:] + r.stderr)

    # skiffctl inject == the webhook: the same manifest, both as the API server stores them.
    manifest = os.path.join(tempfile.mkdtemp(prefix="skiff-inj-"), "pod.yaml")
    with open(manifest, "w") as f:
        f.write(pod_yaml("catalog-4", "shop-inj"))
    by_webhook = kube.kubectl("create", "--dry-run=server", "-o", "json", "-f", manifest,
                              check_rc=False)
    offline = subprocess.run([os.path.join(ot.ARGS.bin_dir, "cli/skiffctl"), "inject", "-f",
                              manifest, "--proxy-image", IMAGE, "--xds-address", XDS],
                             capture_output=True, text=True, timeout=30)
    by_skiffctl = kube.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-",
                               input=offline.stdout, check_rc=False)
    a = comparable(json.loads(by_webhook.stdout)) if by_webhook.returncode == 0 else None
    b = comparable(json.loads(by_skiffctl.stdout)) if by_skiffctl.returncode == 0 else None
    if a != b and a is not None and b is not None:
        print("\n".join(difflib.unified_diff(json.dumps(a, indent=1, sort_keys=True).splitlines(),
                                             json.dumps(b, indent=1, sort_keys=True).splitlines(),
                                             "webhook", "skiffctl", lineterm="")))
    check("skiffctl inject's output, created, equals what the webhook makes of the manifest "
          "(and the webhook does not inject it again)",
          offline.returncode == 0 and a is not None and a == b and
          names(b, "containers").count("skiff-proxy") == 1,
          (offline.stderr, by_webhook.stderr, by_skiffctl.stderr,
           json.dumps(a, sort_keys=True)[:1500], json.dumps(b, sort_keys=True)[:1500]))
    stored = comparable(json.loads(kube.kubectl("get", "pod", "catalog-1", "-n", "shop-inj", "-o",
                                                "json").stdout))
    b["metadata"]["name"] = "catalog-1"
    check("... and equals the pod the API server stored from the webhook's patch",
          stored["spec"] == b["spec"] and
          stored["metadata"]["annotations"] == b["metadata"]["annotations"],
          (json.dumps(stored["spec"], sort_keys=True)[:1200],
           json.dumps(b["spec"], sort_keys=True)[:1200]))

    # The operator down: only the namespaces that inject depend on it.
    op.stop()
    r = create(kube, pod_yaml("web-3", "plain"))
    check("with the operator down, a pod in a namespace that does not inject is created",
          r.returncode == 0, r.stderr)
    r = create(kube, pod_yaml("catalog-5", "shop-inj"))
    check("... while a labelled namespace refuses pods without their sidecar (failurePolicy "
          "Fail, the webhook named)",
          r.returncode != 0 and 'failed calling webhook "namespace.injection.skiff.dev"' in r.stderr,
          r.stdout[-500:] + r.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    args = ap.parse_args()
    ot.ARGS = args
    pt.ARGS = args
    xt.ARGS = args
    kube = None
    try:
        kube = ot.Kube()
        run(kube)
    except Exception:
        check("injection scenario", False, traceback.format_exc())
    finally:
        for proc in pt.PROCS:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if kube is not None:
            kube.stop()
    print(f"{pt.RESULTS['passed']} passed, {pt.RESULTS['failed']} failed")
    sys.exit(1 if pt.RESULTS["failed"] else 0)


if __name__ == "__main__":
    main()
