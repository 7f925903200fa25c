#!/usr/bin/env python3
"""skiff-operator against a real kube-apiserver + etcd (tests/kube/env.sh), driven with the
real kubectl, feeding a real skiff-proxy over xDS, with test backends on 127.0.0.1:

  apply CRDs and Istio YAML (v1alpha3 and v1) -> the proxy's routes change; Services,
  EndpointSlices and Pods from the API feed clusters and subsets; an invalid VirtualService
  is reported in its status (field path) and as an Event while the valid ones keep working;
  delete -> route removed; API server restart -> converges; a watch resumed from a
  resourceVersion the restarted server no longer has -> 410 -> relist, no change missed;
  two replicas -> exactly one writes status; the in-cluster code path with the manifests'
  ServiceAccount token and RBAC works, and fails clearly without the binding.

Prints 'N passed, N failed'; exits non-zero on failure."""
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
import traceback
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import proxy_test as pt  # noqa: E402
import xds_test as xt  # noqa: E402
sys.path.insert(0, HERE)
import crdwait  # noqa: E402
from proxy_test import check  # noqa: E402

ENV = os.path.join(HERE, "env.sh")
# The API server refuses loopback addresses in EndpointSlices: the objects name a
# documentation address and the proxies connect to 127.0.0.1 in its place.
MAP = ["--address-map", "192.0.2.10=127.0.0.1"]
ARGS = None


class Kube:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="skiff-kube-")
        self.started = False
        r = subprocess.run([ENV, "start", self.dir], capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            subprocess.run([ENV, "stop", self.dir], capture_output=True, timeout=120)
            raise RuntimeError("env.sh start failed:\n" + r.stdout + r.stderr)
        self.started = True
        self.kubeconfig = os.path.join(self.dir, "kubeconfig")

    def kubectl(self, *args, input=None, check_rc=True):
        r = subprocess.run(["kubectl", "--kubeconfig", self.kubeconfig, "--request-timeout=20s",
                            *args], input=input, capture_output=True, text=True, timeout=60)
        if check_rc and r.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {r.stdout}{r.stderr}")
        return r

    def apply(self, yaml_text):
        return self.kubectl("apply", "-f", "-", input=yaml_text)

    def wait_crds(self, names=crdwait.CRDS):
        crdwait.wait_established(lambda *a: self.kubectl("get", *a).stdout, names)

    def restart_apiserver(self, between=None):
        subprocess.run([ENV, "stop-apiserver", self.dir], check=True, capture_output=True,
                       timeout=120)
        if between:
            between()
        subprocess.run([ENV, "start-apiserver", self.dir], check=True, capture_output=True,
                       timeout=300)

    def stop(self):
        if self.started:
            subprocess.run([ENV, "stop", self.dir], capture_output=True, timeout=120)
            self.started = False


class KubeOperator(xt.Operator):
    """skiff-operator in Kubernetes mode."""

    def __init__(self, extra, env=None, identity="op-1"):
        self.extra = extra
        self.env = env
        self.identity = identity
        super().__init__(config_dir=None)

    def start(self):
        self.log = open(self.log_path, "a+")
        self.proc = subprocess.Popen(
            [os.path.join(ARGS.bin_dir, "operator/skiff-operator"),
             "--xds-address", "127.0.0.1", "--xds-port", str(self.port),
             "--metrics-address", "127.0.0.1", "--metrics-port", str(self.metrics),
             "--holdoff", "0s", "--identity", self.identity,
             "--leader-election-namespace", "default",
             *([] if "--webhook-port" in self.extra else ["--webhook-port", "0"]), *self.extra],
            stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
        pt.PROCS.append(self.proc)
        if not pt.wait_port(self.port) or not pt.wait_port(self.metrics):
            raise RuntimeError("operator did not start: " + self.logs())


def wait_until(fn, timeout=20, interval=0.1):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    return last


def workloads(ns, port_v1, port_v2):
    return f"""apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: v1
kind: Service
metadata: {{name: catalog, namespace: {ns}}}
spec:
  selector: {{app: catalog}}
  ports: [{{name: http, port: 8080, targetPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: catalog-v1, namespace: {ns}, labels: {{app: catalog, version: v1}}}}
spec:
  containers: [{{name: app, image: catalog:v1}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: catalog-v2, namespace: {ns}, labels: {{app: catalog, version: v2}}}}
spec:
  containers: [{{name: app, image: catalog:v2}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: catalog-v1
  namespace: {ns}
  labels: {{kubernetes.io/service-name: catalog}}
addressType: IPv4
ports: [{{name: http, port: {port_v1}, protocol: TCP}}]
endpoints:
- addresses: [192.0.2.10]
  conditions: {{ready: true}}
  targetRef: {{kind: Pod, name: catalog-v1, namespace: {ns}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: catalog-v2
  namespace: {ns}
  labels: {{kubernetes.io/service-name: catalog}}
addressType: IPv4
ports: [{{name: http, port: {port_v2}, protocol: TCP}}]
endpoints:
- addresses: [192.0.2.10]
  conditions: {{ready: true}}
  targetRef: {{kind: Pod, name: catalog-v2, namespace: {ns}}}
"""


def istio(ns, v1_prefix="/shop"):
    # The Gateway in v1alpha3, the rest in v1: both are served and stored as v1.
    return f"""apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: {{name: gw, namespace: {ns}}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: catalog, namespace: {ns}}}
spec:
  host: catalog
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: catalog, namespace: {ns}}}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{{headers: {{x-version: {{exact: v2}}}}}}]
    route: [{{destination: {{host: catalog, subset: v2}}}}]
  - match: [{{uri: {{prefix: {v1_prefix}}}}}]
    route: [{{destination: {{host: catalog, subset: v1}}}}]
"""


def who(port, path, headers=None):
    try:
        s, h, b = pt.http_get(port, path, headers=headers)
    except OSError:
        return None
    if s != 200:
        return s
    return json.loads(b)["upstream"]


def set_pod_ready(kube, ns, name):
    kube.kubectl("patch", "pod", name, "-n", ns, "--subresource=status", "--type=merge", "-p",
                 json.dumps({"status": {"podIP": "192.0.2.10", "phase": "Running",
                                        "conditions": [{"type": "Ready", "status": "True"}]}}))


def conditions(kube, ns, kind, name):
    r = kube.kubectl("get", kind, name, "-n", ns, "-o", "json", check_rc=False)
    if r.returncode != 0:
        return []
    return json.loads(r.stdout).get("status", {}).get("conditions", [])


def service_entry(kube, ns, gw, up):
    """The ServiceEntry CRD installed while the operator runs: an entry applied then is
    read, served (a gateway route to its STATIC endpoint) and gets its status."""
    kube.kubectl("apply", "-f", os.path.join(ROOT, "crds", "serviceentry.yaml"))
    kube.wait_crds(["serviceentries.networking.istio.io"])
    kube.apply(f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: partner-api, namespace: {ns}}}
spec:
  hosts: [api.partner.example]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {up["v2"]}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: partner, namespace: {ns}}}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{{uri: {{prefix: /partner}}}}]
    route: [{{destination: {{host: api.partner.example}}}}]
""")
    check("the ServiceEntry CRD installed later: an entry applied then is served (a gateway "
          "route to its STATIC endpoint)",
          wait_until(lambda: who(gw.port, "/partner/x") == "catalog-v2", 60),
          who(gw.port, "/partner/x"))
    cs = wait_until(lambda: conditions(kube, ns, "serviceentry", "partner-api"), 20)
    check("its status: Accepted=True, ResolvedRefs=True, with observedGeneration",
          any(c["type"] == "Accepted" and c["status"] == "True" and
              c.get("observedGeneration") == 1 for c in (cs or [])) and
          any(c["type"] == "ResolvedRefs" and c["status"] == "True" for c in (cs or [])), cs)
    out = kube.kubectl("get", "se", "-n", ns).stdout
    check("kubectl get se shows its hosts, location and resolution",
          "api.partner.example" in out and "MESH_EXTERNAL" in out and "STATIC" in out, out)
    kube.kubectl("delete", "serviceentry", "partner-api", "-n", ns)
    check("deleting the entry removes its endpoints (503)",
          wait_until(lambda: who(gw.port, "/partner/x") == 503, 20), who(gw.port, "/partner/x"))
    kube.kubectl("delete", "virtualservice", "partner", "-n", ns)


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ARGS = ap.parse_args()
    pt.ARGS = ARGS
    xt.ARGS = ARGS
    kube = None
    try:
        kube = Kube()
        run(kube)
    except Exception:
        check("kube scenario", False, traceback.format_exc())
    finally:
        for proc in pt.PROCS:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if kube is not None:
            kube.stop()
    print(f"{pt.RESULTS['passed']} passed, {pt.RESULTS['failed']} failed")
    sys.exit(1 if pt.RESULTS["failed"] else 0)


def run(kube):
    up = {"v1": pt.start_upstream("catalog-v1"), "v2": pt.start_upstream("catalog-v2")}
    # All CRDs but ServiceEntry's: the operator must sync without it (installed later).
    for crd in ("gateway.yaml", "virtualservice.yaml", "destinationrule.yaml"):
        kube.kubectl("apply", "-f", os.path.join(ROOT, "crds", crd))
    kube.wait_crds([c for c in crdwait.CRDS if not c.startswith("serviceentries.")])
    ns = "shop"
    kube.apply(workloads(ns, up["v1"], up["v2"]))
    set_pod_ready(kube, ns, "catalog-v1")
    set_pod_ready(kube, ns, "catalog-v2")
    kube.apply(istio(ns))

    op = KubeOperator(["--kubeconfig", kube.kubeconfig])
    gw = xt.XdsProxy(op.port, "gw-kube", "--role", "gateway", *MAP)
    check("kubectl apply (v1alpha3 Gateway, v1 VirtualService) -> the proxy routes to the "
          "subset the Pods' labels select (the ServiceEntry CRD not installed yet)",
          wait_until(lambda: who(gw.port, "/shop/items") == "catalog-v1", 30) and
          who(gw.port, "/other", ) == 404, (who(gw.port, "/shop/items"), op.logs()[-2000:]))
    check("header match to subset v2 through EndpointSlice + Pod labels",
          who(gw.port, "/x", headers={"x-version": "v2"}) == "catalog-v2")
    cs = wait_until(lambda: conditions(kube, ns, "virtualservice", "catalog"), 20)
    check("status written: Accepted=True with observedGeneration",
          any(c["type"] == "Accepted" and c["status"] == "True" and
              c.get("observedGeneration") == 1 for c in (cs or [])), cs)

    # A change through the API.
    kube.apply(istio(ns, v1_prefix="/store"))
    check("an edit moves the route", wait_until(
        lambda: who(gw.port, "/store/items") == "catalog-v1" and who(gw.port, "/shop/x") == 404,
        20))

    # Invalid but schema-valid: a subset that does not exist, and a bad regex.
    bad = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken, namespace: shop}
spec:
  hosts: [broken.example.com]
  gateways: [gw]
  http:
  - match: [{uri: {regex: "(unclosed"}}]
    route: [{destination: {host: catalog, subset: v1}}]
"""
    kube.apply(bad)
    cs = wait_until(lambda: [c for c in conditions(kube, ns, "vs", "broken")
                             if c["status"] == "False"], 20)
    check("an invalid VirtualService is reported in its status with the field path",
          bool(cs) and any("spec.http[0].match[0].uri.regex" in c["message"] for c in cs), cs)
    ev = wait_until(lambda: [e for e in json.loads(kube.kubectl(
        "get", "events", "-n", ns, "-o", "json").stdout)["items"]
        if e["involvedObject"]["name"] == "broken"], 20)
    check("... and as a Warning Event", bool(ev) and ev[0]["type"] == "Warning" and
          "regex" in ev[0]["message"], ev)
    check("the valid VirtualService keeps working", who(gw.port, "/store/a") == "catalog-v1")

    # An update that passes the CRD schema but not skiff's validation: the last valid
    # version keeps serving, the status says why (field path) and that it is kept.
    kube.apply(istio(ns, v1_prefix="/store").replace("prefix: /store", 'regex: "(/store"'))
    cs = wait_until(lambda: [c for c in conditions(kube, ns, "vs", "catalog")
                             if c["type"] == "Accepted" and c["status"] == "False"], 20)
    check("an invalid update keeps serving the last valid version; its status says why",
          bool(cs) and "spec.http[1].match[0].uri.regex" in cs[0]["message"] and
          "still served" in cs[0]["message"] and cs[0].get("observedGeneration") == 3 and
          all(who(gw.port, "/store/items") == "catalog-v1" for _ in range(5)),
          (cs, who(gw.port, "/store/items")))
    r = subprocess.run([os.path.join(ARGS.bin_dir, "cli/skiffctl"), "status", "--operator",
                        f"127.0.0.1:{op.port}"], capture_output=True, text=True, timeout=30)
    check("skiffctl status on the Kubernetes source shows the error and the version served",
          r.returncode == 1 and "VirtualService shop/catalog: INVALID" in r.stdout and
          "spec.http[1].match[0].uri.regex" in r.stdout and
          "serving its last valid version" in r.stdout, r.stdout + r.stderr)
    kube.apply(istio(ns, v1_prefix="/store"))
    check("... and the fixed version is accepted again", wait_until(
        lambda: [c for c in conditions(kube, ns, "vs", "catalog")
                 if c["type"] == "Accepted" and c["status"] == "True"], 20))

    # Delete -> route removed.
    kube.kubectl("delete", "virtualservice", "catalog", "-n", ns)
    check("delete removes the routes", wait_until(lambda: who(gw.port, "/store/a") == 404, 20))
    kube.apply(istio(ns))
    check("re-created", wait_until(lambda: who(gw.port, "/shop/a") == "catalog-v1", 20))

    service_entry(kube, ns, gw, up)

    # API server restart: the operator reconnects and follows later changes.
    kube.restart_apiserver()
    kube.apply(istio(ns, v1_prefix="/after-restart"))
    check("after an API server restart the operator converges on the final state",
          wait_until(lambda: who(gw.port, "/after-restart/a") == "catalog-v1", 40),
          op.logs()[-2000:])

    # 410 Gone: the operator is paused while a change is made and the API server restarts,
    # so its watches resume from a resourceVersion the new server's cache does not have.
    relists_before = op.metric("skiff_operator_relists_total") or 0
    os.kill(op.proc.pid, signal.SIGSTOP)
    try:
        kube.apply(istio(ns, v1_prefix="/while-paused"))
        kube.restart_apiserver()
    finally:
        os.kill(op.proc.pid, signal.SIGCONT)
    check("a watch resumed with a too old resourceVersion relists (410) and misses nothing",
          wait_until(lambda: who(gw.port, "/while-paused/a") == "catalog-v1", 60) and
          wait_until(lambda: (op.metric("skiff_operator_relists_total") or 0) > relists_before,
                     20) and "410 Gone" in op.logs(),
          (op.metric("skiff_operator_relists_total"), op.logs()[-3000:]))

    # Two replicas: exactly one writes status.
    op2 = KubeOperator(["--kubeconfig", kube.kubeconfig], identity="op-2")
    pt.wait_port(op2.metrics)
    time.sleep(3)
    leaders = [op.metric("skiff_operator_leader"), op2.metric("skiff_operator_leader")]
    writes2 = op2.metric("skiff_operator_status_writes_total")
    kube.apply(bad.replace("broken", "broken2"))
    # (Generous: on a loaded machine under ASan the leader's write can take a while.)
    written = wait_until(lambda: [c for c in conditions(kube, ns, "vs", "broken2")
                                  if c["status"] == "False"], 60)
    time.sleep(1)
    after = {"leaders": [op.metric("skiff_operator_leader"), op2.metric("skiff_operator_leader")],
             "op2 writes": [writes2, op2.metric("skiff_operator_status_writes_total")],
             "broken2 conditions": conditions(kube, ns, "vs", "broken2")}
    check("two replicas: exactly one holds the Lease and writes status",
          leaders == [1, 0] and op2.metric("skiff_operator_status_writes_total") == writes2 and
          bool(written), (leaders, after, op.logs()[-1500:], op2.logs()[-1500:]))
    gw2 = xt.XdsProxy(op2.port, "gw-kube-2", "--role", "gateway", *MAP)
    check("... and both serve xDS",
          wait_until(lambda: who(gw2.port, "/while-paused/a") == "catalog-v1", 30))
    op.stop()
    check("the other replica takes the Lease over when the leader stops",
          wait_until(lambda: op2.metric("skiff_operator_leader") == 1, 40))
    op2.stop()

    # In-cluster code path: the manifests' ServiceAccount, RBAC and a token.
    kube.apply(open(os.path.join(ROOT, "manifests", "namespace.yaml")).read())
    kube.apply(open(os.path.join(ROOT, "manifests", "rbac.yaml")).read())
    token = kube.kubectl("create", "token", "skiff-operator", "-n", "skiff-system").stdout.strip()
    sa = tempfile.mkdtemp(prefix="skiff-sa-")
    open(os.path.join(sa, "token"), "w").write(token)
    open(os.path.join(sa, "namespace"), "w").write("skiff-system")
    shutil.copy(os.path.join(kube.dir, "pki", "ca.crt"), os.path.join(sa, "ca.crt"))
    server = json.loads(kube.kubectl("config", "view", "--raw", "-o", "json").stdout)
    port = re.search(r":(\d+)$", server["clusters"][0]["cluster"]["server"]).group(1)
    env = dict(os.environ, KUBERNETES_SERVICE_HOST="127.0.0.1", KUBERNETES_SERVICE_PORT=port,
               SKIFF_SERVICEACCOUNT_DIR=sa)
    env.pop("KUBECONFIG", None)
    op3 = KubeOperator(["--leader-election-namespace", "skiff-system",
                        "--secret-namespaces", "skiff-system",  # as manifests/operator.yaml
                        "--webhook-port", str(pt.free_port()), "--webhook-address", "127.0.0.1"],
                       env=env, identity="op-3")
    gw3 = xt.XdsProxy(op3.port, "gw-kube-3", "--role", "gateway", *MAP)
    kube.apply(bad.replace("broken", "broken3"))
    check("in-cluster config with the ServiceAccount token: lists, serves and writes status",
          wait_until(lambda: who(gw3.port, "/while-paused/a") == "catalog-v1", 40) and
          wait_until(lambda: [c for c in conditions(kube, ns, "vs", "broken3")
                              if c["status"] == "False"], 30) and
          "in-cluster" in op3.logs(), op3.logs()[-2000:])
    check("in-cluster with the manifests' RBAC: the webhook's certificates go into its Secret",
          wait_until(lambda: kube.kubectl("get", "secret", "skiff-webhook-certs", "-n",
                                          "skiff-system", check_rc=False).returncode == 0, 30),
          op3.logs()[-2000:])
    op3.stop()
    kube.kubectl("delete", "clusterrolebinding", "skiff-operator")
    op4 = KubeOperator(["--leader-election-namespace", "skiff-system"], env=env, identity="op-4")
    check("without the RoleBinding the operator says it is forbidden, naming the resource",
          wait_until(lambda: re.search(r"list \w+: 403: .*forbidden.*system:serviceaccount:"
                                       r"skiff-system:skiff-operator", op4.logs()), 20),
          op4.logs()[-2000:])
    op4.stop()


if __name__ == "__main__":
    main()
