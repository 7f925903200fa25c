#!/usr/bin/env python3
"""The seed's story in a real local cluster (tests/cluster/localcluster.py): skiff's images
built offline, `kubectl apply -k manifests/` unchanged, the coolstore shop from
examples/coolstore-k8s/ in a namespace labelled istio-injection=enabled, and then, with
traffic through the ingress gateway's Service:

  the gateway serves /api/catalog -> least privilege (the operator's ServiceAccount and
  nothing else, non-root pods with the capabilities the manifests grant) -> the shop's
  pods have the injected skiff-init and skiff-proxy sidecar -> chaos 100 %, 50 %,
  `kubectl apply` of retries -> ~6 %, dark launch, 90/10 (examples/coolstore-scenarios/)
  -> the operator's leader killed under load: another replica takes the Lease, traffic
  never stops -> a rollout of catalog v1 (new ReplicaSet) under load with no failed
  request -> an invalid VirtualService refused by the validating webhook with its field
  path

Random outcomes are checked with binomial bounds on fixed request counts; there are no
timing thresholds (bench/cluster_apply_bench.py measures apply -> traffic).

  story_test.py                 build the images, start a cluster, run the story, tear
                                everything down (also on failure)
  story_test.py --reuse DIR     run the story on the cluster already up in DIR (as
                                scripts/local-cluster.sh story does); leaves it up
  --bench N                     then measure apply -> traffic over N changes

Prints 'N passed, N failed'; exits 0 when all passed, 1 on a failure, 77 (skipped, with
the reason) when Docker or the Go toolchain is missing."""
import argparse
import http.client
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import localcluster as lc  # noqa: E402

RESULTS = {"passed": 0, "failed": 0}
# In the sidecar's config_dump (indented JSON): the scenarios' retries and canary weight.
RETRIES_3 = r'"numRetries": 3[,\n]'
WEIGHT_10 = r'"weight": 10[,\n]'
PHASES = []
SKIP = 77


def check(name, cond, detail=""):
    if cond:
        RESULTS["passed"] += 1
        print(f"ok   {name}", flush=True)
    else:
        RESULTS["failed"] += 1
        print(f"FAIL {name}\n     {str(detail)[:3000]}", flush=True)
    return cond


def within(count, n, p, sigmas=5.0):
    """Is `count` of `n` draws consistent with probability p?"""
    mean = n * p
    sd = math.sqrt(n * p * (1 - p))
    lo, hi = mean - sigmas * sd, mean + sigmas * sd
    return lo <= count <= hi, f"{count}/{n}, expected {mean:.1f} in [{lo:.1f}, {hi:.1f}]"


def phase(name, fn, *args):
    t0 = time.monotonic()
    print(f"==> {name}", flush=True)
    try:
        return fn(*args)
    finally:
        took = time.monotonic() - t0
        PHASES.append((name, took))
        print(f"<== {name}: {took:.0f} s", flush=True)


def wait_for(what, fn, timeout=120, interval=0.25):
    return lc.wait_for(what, fn, timeout=timeout, interval=interval)


# --------------------------------------------------------------------------------------
# Traffic from inside the node's network namespace


class Node:
    """Runs functions in threads that have joined the node's network namespace: their
    sockets can reach only what is inside the cluster (checked by localcluster up)."""

    def __init__(self, cluster):
        self.netns_path = cluster.netns_path

    def thread(self, fn, *args, netns=None):
        out = {}

        def body():
            lc.setns(netns or self.netns_path)
            try:
                out["value"] = fn(*args)
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller
                out["error"] = e

        t = threading.Thread(target=body, daemon=True)
        t.start()
        return t, out

    def call(self, fn, *args, netns=None):
        t, out = self.thread(fn, *args, netns=netns)
        t.join()
        if "error" in out:
            raise out["error"]
        return out.get("value")


def http_get(host, port, path, headers=None, timeout=10, conn=None):
    """(status, headers dict lower-case, body) — in a node thread."""
    own = conn is None
    c = conn or http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        body = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body
    finally:
        if own:
            c.close()


def http_post(host, port, path, doc, timeout=10):
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request("POST", path, body=json.dumps(doc), headers={"content-type": "application/json"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def version_of(body):
    try:
        items = json.loads(body)
    except ValueError:
        return None
    if not isinstance(items, list) or not items:
        return None
    return "v2" if all("imageUrl" in i for i in items) else "v1"


def requests(node, host, port, path, n, threads=4, headers=None):
    """n GETs over `threads` keep-alive connections; a list of (status, version, error)."""
    lock = threading.Lock()
    left = {"n": n}
    results = []
    deadline = time.monotonic() + 300

    def worker():
        conn = None
        while time.monotonic() < deadline:
            with lock:
                if left["n"] == 0:
                    return
                left["n"] -= 1
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=20)
                s, _h, b = http_get(host, port, path, headers, conn=conn)
                res = (s, version_of(b) if s == 200 else b[:80], None)
            except (OSError, http.client.HTTPException) as e:
                res = (0, None, repr(e))
                if conn:
                    conn.close()
                conn = None
            with lock:
                results.append(res)

    def run():
        ts = [threading.Thread(target=worker) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return results

    return node.call(run)


class Load:
    """Steady traffic through the gateway until stopped (bounded: max_seconds and
    max_requests), recording every outcome with its time."""

    def __init__(self, node, host, port, path, threads=2, pause=0.01, max_seconds=600,
                 max_requests=200000):
        self.node, self.host, self.port, self.path = node, host, port, path
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.results = []  # (monotonic time, status, error)
        self.threads = []
        self.pause = pause
        self.deadline = time.monotonic() + max_seconds
        self.max_requests = max_requests
        for _ in range(threads):
            t, _out = node.thread(self.worker)
            self.threads.append(t)

    def worker(self):
        conn = None
        while not self.stop_event.is_set() and time.monotonic() < self.deadline:
            with self.lock:
                if len(self.results) >= self.max_requests:
                    return
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=20)
                s, _h, b = http_get(self.host, self.port, self.path, conn=conn)
                res = (time.monotonic(), s, None if s == 200 else b[:100])
            except (OSError, http.client.HTTPException) as e:
                res = (time.monotonic(), 0, repr(e))
                if conn:
                    conn.close()
                conn = None
            with self.lock:
                self.results.append(res)
            self.stop_event.wait(self.pause)

    def snapshot(self):
        with self.lock:
            return list(self.results)

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=60)
        return self.snapshot()


def failures(results):
    return [r for r in results if r[1] != 200]


# --------------------------------------------------------------------------------------
# The story


class Story:
    def __init__(self, cluster):
        self.c = cluster
        self.node = Node(cluster)

    # -- kubectl
    def kubectl(self, *args, check_rc=True, input=None, timeout=120):
        r = self.c.kubectl("--request-timeout=60s", *args, check=False, input=input,
                           timeout=timeout)
        if check_rc and r.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {r.stdout}{r.stderr}")
        return r

    def get(self, *args):
        return json.loads(self.kubectl("get", "-o", "json", *args).stdout)

    def apply(self, yaml_text=None, *args, check_rc=True):
        if yaml_text is not None:
            return self.kubectl("apply", "-f", "-", *args, input=yaml_text, check_rc=check_rc)
        return self.kubectl("apply", *args, check_rc=check_rc)

    def rollout(self, ns, deploy, timeout=300):
        self.kubectl("-n", ns, "rollout", "status", f"deployment/{deploy}",
                     f"--timeout={timeout}s", timeout=timeout + 30)

    def pods(self, ns, selector):
        return self.get("pods", "-n", ns, "-l", selector)["items"]

    def container_pid(self, pod, container):
        """The host pid of a running container's main process (containerd's task)."""
        for st in pod["status"].get("containerStatuses", []):
            if st["name"] == container and "containerID" in st:
                cid = st["containerID"].split("://", 1)[1]
                out = lc.run("ctr", "--address", os.path.join(self.c.d, "containerd",
                                                                "containerd.sock"),
                             "--namespace", "k8s.io", "tasks", "ls").stdout
                for line in out.splitlines()[1:]:
                    parts = line.split()
                    if parts and parts[0] == cid and parts[2] == "RUNNING":
                        return int(parts[1])
        raise RuntimeError(f"no running container {container} in pod {pod['metadata']['name']}")

    def proc_status(self, pid):
        with open(f"/proc/{pid}/status") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)

    @staticmethod
    def secret_mounts(pid):
        """The mount points of a container's Secrets and projected tokens."""
        with open(f"/proc/{pid}/mountinfo") as f:
            return [line.split()[4] for line in f if "/secrets" in line.split()[4]]

    def service_ip(self, ns, name):
        return self.get("service", "-n", ns, name)["spec"]["clusterIP"]

    # -- steps
    def deploy_skiff(self):
        r = self.apply(None, "-k", os.path.join(ROOT, "manifests"))
        check("kubectl apply -k manifests/ (CRDs, RBAC, operator, webhook, gateway)",
              r.returncode == 0, r.stderr)
        self.rollout("skiff-system", "skiff-operator")
        ops = self.pods("skiff-system", "app=skiff-operator")
        check("the operator runs 2 replicas, both Ready",
              len(ops) == 2 and all(self.ready(p) for p in ops), [p["metadata"]["name"] for p in ops])
        self.rollout("skiff-system", "istio-ingressgateway")
        ca = wait_for("the webhook caBundle (written by the operator's leader)", lambda: self.get(
            "validatingwebhookconfiguration", "skiff-validation")["webhooks"][0][
            "clientConfig"].get("caBundle"), timeout=180)
        check("the leader wrote the validating webhook's caBundle", bool(ca))

    @staticmethod
    def ready(pod):
        return any(c["type"] == "Ready" and c["status"] == "True"
                   for c in pod["status"].get("conditions", []))

    def deploy_coolstore(self):
        r = self.apply(None, "-k", os.path.join(ROOT, "examples", "coolstore-k8s"))
        check("kubectl apply -k examples/coolstore-k8s/ (namespace labelled istio-injection)",
              r.returncode == 0, r.stderr)
        ex = os.path.join(ROOT, "examples", "coolstore")
        r = self.apply(None, "-f", os.path.join(ex, "gateway.yaml"),
                       "-f", os.path.join(ex, "catalog-destinationrule.yaml"),
                       "-f", os.path.join(ex, "catalog-virtualservice.yaml"))
        check("kubectl apply of the shop's Gateway, VirtualServices, DestinationRule "
              "(admitted by the webhook)", r.returncode == 0, r.stderr)
        for d in ("apigateway", "catalog-v1", "catalog-v2"):
            self.rollout("coolstore", d)
        self.gw_ip = self.service_ip("skiff-system", "istio-ingressgateway")

    def gateway_get(self, path="/api/catalog", headers=None):
        return self.node.call(http_get, self.gw_ip, 80, path, headers)

    def serves_catalog(self):
        def ok():
            s, _h, b = self.gateway_get()
            return s == 200 and version_of(b) is not None

        wait_for("the gateway to serve /api/catalog", ok, timeout=180, interval=0.5)
        s, h, b = self.gateway_get()
        check(f"GET http://{self.gw_ip}/api/catalog (the gateway's Service) answers the items",
              s == 200 and version_of(b) in ("v1", "v2"), (s, b[:200]))
        res = requests(self.node, self.gw_ip, 80, "/api/catalog", 100)
        bad = [r for r in res if r[0] != 200]
        check("100 requests through the gateway: all 200", not bad and len(res) == 100, bad[:3])
        s, _h, _b = self.gateway_get("/nothing-routes-here")
        check("a path no route matches: 404 from the gateway", s == 404, s)

    def least_privilege(self):
        ops = self.pods("skiff-system", "app=skiff-operator")
        gws = self.pods("skiff-system", "istio=ingressgateway")
        check("the operator's pods run as the ServiceAccount skiff-operator",
              all(p["spec"].get("serviceAccountName") == "skiff-operator" for p in ops))
        for what, pods, container in (("operator", ops, "operator"),
                                      ("ingress gateway", gws, "proxy")):
            for p in pods:
                st = self.proc_status(self.container_pid(p, container))
                check(f"{what} {p['metadata']['name']}: runs as uid/gid 65532, no capabilities, "
                      "no new privileges, seccomp filter",
                      st["Uid"].split()[:2] == ["65532", "65532"] and
                      st["Gid"].split()[0] == "65532" and
                      st["CapEff"] == st["CapPrm"] == st["CapBnd"] == "0000000000000000" and
                      st["NoNewPrivs"] == "1" and st["Seccomp"] == "2",
                      {k: st.get(k) for k in ("Uid", "Gid", "CapEff", "CapBnd", "NoNewPrivs",
                                              "Seccomp")})
        gpid = self.container_pid(gws[0], "proxy")
        check("the gateway has no API credentials at all (automountServiceAccountToken: false)",
              not self.secret_mounts(gpid), self.secret_mounts(gpid))
        opid = self.container_pid(ops[0], "operator")
        with open(f"/proc/{opid}/environ", "rb") as f:
            env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
        check("the operator has no kubeconfig: only in-cluster config (KUBERNETES_SERVICE_HOST)",
              b"KUBECONFIG" not in env and env.get(b"KUBERNETES_SERVICE_HOST") == b"198.19.0.1",
              sorted(env))
        # (/var/run is a link to /run in Debian's images: the kubelet's mount lands there.)
        secrets_mounts = self.secret_mounts(opid)
        check("the operator's only credentials are its ServiceAccount token",
              secrets_mounts == ["/run/secrets/kubernetes.io/serviceaccount"], secrets_mounts)
        token_path = f"/proc/{opid}/root{secrets_mounts[0]}/token"
        with open(token_path) as f:
            token = f.read().strip()

        def as_operator(*args):
            return lc.run(*self.c.exec_argv(
                "kubectl", "--kubeconfig=/dev/null", f"--server=https://{lc.NODE_IP}:6443",
                f"--certificate-authority={self.c.d}/pki/ca.crt", f"--token={token}", *args),
                check=False)

        r = as_operator("get", "secrets", "-n", "kube-system")
        check("with the operator's token, listing Secrets in kube-system is Forbidden, and says "
              "who and what", r.returncode != 0 and "Forbidden" in r.stderr and
              'User "system:serviceaccount:skiff-system:skiff-operator" cannot list resource '
              '"secrets"' in r.stderr, r.stderr)
        verdicts = {}
        for args, want in ((("list", "virtualservices.networking.istio.io", "-A"), "yes"),
                           (("patch", "virtualservices.networking.istio.io", "--subresource=status",
                             "-n", "coolstore"), "yes"),
                           (("update", "leases.coordination.k8s.io", "-n", "skiff-system"), "yes"),
                           (("create", "pods", "-n", "coolstore"), "no"),
                           (("update", "virtualservices.networking.istio.io", "-n", "coolstore"), "no"),
                           (("get", "secrets", "-n", "coolstore"), "no"),
                           (("update", "leases.coordination.k8s.io", "-n", "coolstore"), "no")):
            verdicts[" ".join(args)] = (as_operator("auth", "can-i", *args).stdout.strip(), want)
        check("the operator's token may do what its ClusterRole/Role grant and nothing else",
              all(got == want for got, want in verdicts.values()), verdicts)
        for name, sel in (("apigateway", "app=apigateway"), ("catalog", "app=catalog")):
            for p in self.pods("coolstore", sel):
                st = self.proc_status(self.container_pid(p, name))
                check(f"app {p['metadata']['name']}: uid 65532, no capabilities, no new "
                      "privileges", st["Uid"].split()[0] == "65532" and
                      st["CapEff"] == "0000000000000000" and st["NoNewPrivs"] == "1",
                      {k: st.get(k) for k in ("Uid", "CapEff", "NoNewPrivs")})

    # -- the mesh: the coolstore's pods have skiff's sidecars (injected by the webhook)
    def live_pods(self, ns, selector):
        return [p for p in self.pods(ns, selector)
                if not p["metadata"].get("deletionTimestamp") and self.ready(p)]

    def catalog_ip(self, version):
        pods = self.live_pods("coolstore", f"app=catalog,version={version}")
        if len(pods) != 1:
            raise RuntimeError(f"{len(pods)} ready catalog {version} pods")
        return pods[0]["status"]["podIP"]

    def blowup(self, version, doc):
        """The catalog's chaos switch, POST /blowup to the pod (through its sidecar's
        inbound capture, as any in-cluster client)."""
        status, body = self.node.call(http_post, self.catalog_ip(version), 8080, "/blowup", doc)
        if status != 200:
            raise RuntimeError(f"POST /blowup {doc}: {status} {body[:200]}")

    def sidecar_config(self):
        """The apigateway sidecar's config_dump (its admin port, 127.0.0.1:15000 in the pod's
        network namespace)."""
        pod = self.live_pods("coolstore", "app=apigateway")[0]
        pid = self.container_pid(pod, "skiff-proxy")
        _s, _h, body = self.node.call(http_get, "127.0.0.1", 15000, "/config_dump",
                                      netns=f"/proc/{pid}/ns/net")
        return body.decode(errors="replace")

    def apply_scenario(self, name, marker, absent=()):
        """kubectl apply of a scenario, then waits until the apigateway's sidecar has it: the
        regular expression `marker` matches its config and none of `absent` does."""
        path = os.path.join(ROOT, "examples", "coolstore-scenarios", name)
        r = self.apply(None, "-f", path)
        if r.returncode != 0:
            raise RuntimeError(r.stderr)

        def has_it():
            config = self.sidecar_config()
            return re.search(marker, config) and not any(re.search(a, config) for a in absent)

        wait_for(f"{name} in the apigateway's sidecar ({marker})", has_it, timeout=60)

    def catalog(self, n, headers=None, threads=8):
        return requests(self.node, self.gw_ip, 80, "/api/catalog", n, threads=threads,
                        headers=headers)

    def injected(self):
        for d in ("apigateway", "catalog-v1", "catalog-v2"):
            app = d.split("-")[0]
            pods = self.live_pods("coolstore", f"app={app}" + (
                f",version={d.split('-')[1]}" if "-" in d else ""))
            spec = pods[0]["spec"] if pods else {}
            inits = [c["name"] for c in spec.get("initContainers", [])]
            names = [c["name"] for c in spec.get("containers", [])]
            check(f"{d}: the injection webhook added skiff-init and the skiff-proxy sidecar",
                  inits[:1] == ["skiff-init"] and "skiff-proxy" in names, (inits, names))
        pod = self.live_pods("coolstore", "app=catalog,version=v1")[0]
        init = pod["spec"]["initContainers"][0]["securityContext"]
        check("skiff-init: the capabilities the injected spec grants, NET_ADMIN and NET_RAW only",
              sorted(init["capabilities"].get("add", [])) == ["NET_ADMIN", "NET_RAW"] and
              init["capabilities"].get("drop") == ["ALL"] and
              init.get("allowPrivilegeEscalation") is False, init)
        st = self.proc_status(self.container_pid(pod, "skiff-proxy"))
        check("sidecar skiff-proxy: uid/gid 1337, no capabilities, no new privileges",
              st["Uid"].split()[0] == "1337" and st["Gid"].split()[0] == "1337" and
              st["CapEff"] == st["CapBnd"] == "0000000000000000" and st["NoNewPrivs"] == "1",
              {k: st.get(k) for k in ("Uid", "Gid", "CapEff", "CapBnd", "NoNewPrivs")})

    def chaos_and_routing(self):
        """The seed's second act, in the cluster: chaos on catalog v1, retries, dark launch,
        90/10 (examples/coolstore-scenarios/, applied with kubectl)."""
        # From the shop's own VirtualService (all to v1), also when the story runs again.
        self.apply_scenario("../coolstore/catalog-virtualservice.yaml", "version-v1",
                            absent=(RETRIES_3, "x-dark-launch", WEIGHT_10))
        self.blowup("v1", {"active": False})
        res = self.catalog(50)
        check("through the mesh: 50 requests, all 200 from catalog v1 (the shop's VirtualService)",
              all(r[0] == 200 and r[1] == "v1" for r in res), res[:2])
        self.blowup("v1", {"active": True, "type": "500", "percentage": 100})
        res = self.catalog(40)
        check("chaos 500 at 100 %: every call fails with the apigateway's error",
              all(r[0] == 500 and r[1] == b"error calling Catalog service" for r in res), res[:2])
        self.blowup("v1", {"active": True, "type": "500", "percentage": 50})
        n = 1000
        fails = sum(1 for r in self.catalog(n) if r[0] != 200)
        ok, detail = within(fails, n, 0.5)
        check(f"chaos 500 at 50 % without retries: about half fail ({detail})", ok, detail)
        self.apply_scenario("1-retries.yaml", RETRIES_3)
        res = self.catalog(n)
        fails = sum(1 for r in res if r[0] != 200)
        ok, detail = within(fails, n, 0.5 ** 4)
        check(f"kubectl apply retries (attempts 3, 5xx): failures ~ 0.5^4 = 6.25 % ({detail})",
              ok, detail)
        self.blowup("v1", {"active": False})
        self.apply_scenario("2-dark-launch.yaml", "x-dark-launch")
        res = self.catalog(60, headers={"x-dark-launch": "v2"})
        check("dark launch: requests with x-dark-launch: v2 get only catalog v2",
              all(r[0] == 200 and r[1] == "v2" for r in res), res[:2])
        res = self.catalog(60)
        check("dark launch: everyone else still gets v1",
              all(r[0] == 200 and r[1] == "v1" for r in res), res[:2])
        self.apply_scenario("3-canary-90-10.yaml", WEIGHT_10)
        res = self.catalog(n)
        to_v2 = sum(1 for r in res if r[0] == 200 and r[1] == "v2")
        ok, detail = within(to_v2, n, 0.1)
        check(f"90/10 canary: v2's share within binomial bounds ({detail})",
              ok and all(r[0] == 200 for r in res), detail)

    def rollout_under_load(self):
        """A rollout of catalog v1 (a new ReplicaSet) under steady traffic: no request fails."""
        before = {p["metadata"]["name"] for p in self.pods("coolstore", "app=catalog,version=v1")}
        rs_before = self.get("deployment", "-n", "coolstore", "catalog-v1")["status"].get(
            "observedGeneration")
        load = Load(self.node, self.gw_ip, 80, "/api/catalog")
        try:
            wait_for("traffic", lambda: len(load.snapshot()) >= 20, timeout=60)
            self.kubectl("-n", "coolstore", "rollout", "restart", "deployment/catalog-v1")
            self.rollout("coolstore", "catalog-v1")
            wait_for("the old catalog v1 pod to be gone", lambda: not before & {
                p["metadata"]["name"] for p in self.pods("coolstore", "app=catalog,version=v1")},
                timeout=120, interval=0.5)
            n_after = len(load.snapshot())
            wait_for("traffic after the rollout", lambda: len(load.snapshot()) >= n_after + 50,
                     timeout=60)
        finally:
            res = load.stop()
        after = {p["metadata"]["name"] for p in self.pods("coolstore", "app=catalog,version=v1")}
        rs_after = self.get("deployment", "-n", "coolstore", "catalog-v1")["status"].get(
            "observedGeneration")
        check(f"rollout of catalog v1: a new ReplicaSet's pod {sorted(after)} replaced "
              f"{sorted(before)}", after and not (after & before) and rs_after != rs_before)
        check(f"rollout under load: {len(res)} requests, none failed", res and not failures(res),
              failures(res)[:5])

    def webhook_refuses(self):
        bad = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: catalog-broken, namespace: coolstore}
spec:
  hosts: [catalog]
  http:
  - route: [{destination: {host: catalog, subset: version-v1}}]
    retries: {attempts: 3, retryOn: "5xx,sometimes"}
"""
        r = self.apply(bad, check_rc=False)
        check("an invalid VirtualService is refused by the validating webhook, naming the field",
              r.returncode != 0 and 'admission webhook "validation.skiff.dev" denied the request'
              in r.stderr and "spec.http[0].retries.retryOn" in r.stderr, r.stderr)
        r = self.kubectl("get", "virtualservice", "-n", "coolstore", "catalog-broken",
                         check_rc=False)
        check("... and it is not stored", r.returncode != 0 and "NotFound" in r.stderr, r.stdout)

    def leader(self):
        lease = self.get("lease", "-n", "skiff-system", "skiff-operator")
        return lease["spec"].get("holderIdentity")

    def leader_failover(self):
        ops = {p["metadata"]["name"]: p for p in self.pods("skiff-system", "app=skiff-operator")}
        leader = wait_for("a Lease holder", lambda: self.leader() in ops and self.leader(),
                          timeout=60)
        other = [n for n in ops if n != leader][0]
        load = Load(self.node, self.gw_ip, 80, "/api/catalog")
        try:
            wait_for("traffic", lambda: len(load.snapshot()) >= 20, timeout=60)
            pid = self.container_pid(ops[leader], "operator")
            os.kill(pid, signal.SIGKILL)
            killed_at = time.monotonic()
            # And its pod deleted at once (as when its node is lost): restarted in place, the
            # replica would come back under the same identity and renew its own Lease.
            self.kubectl("-n", "skiff-system", "delete", "pod", leader, "--grace-period=0",
                         "--force", "--wait=false")
            # The surviving replica, or the one the ReplicaSet starts in place of the killed
            # one if it tries first once the Lease has expired.
            new = wait_for("another replica to take the Lease", lambda: (
                lambda h: h and h != leader and h)(self.leader()), timeout=180, interval=0.5)
            took_over = time.monotonic()
            # The new leader writes status: a changed VirtualService gets its observedGeneration.
            vs = self.get("virtualservice", "-n", "coolstore", "apigateway")
            vs["metadata"] = {"name": "apigateway", "namespace": "coolstore",
                              "labels": {"changed-after-failover": "yes"}}
            vs.pop("status", None)
            vs["spec"]["http"][0].setdefault("headers", {})["response"] = {
                "set": {"x-after-failover": "yes"}}
            self.apply(json.dumps(vs))
            served = wait_for("the gateway to serve the change made after the failover",
                              lambda: self.gateway_get()[1].get("x-after-failover") == "yes",
                              timeout=120)

            def status_written():
                v = self.get("virtualservice", "-n", "coolstore", "apigateway")
                conds = v.get("status", {}).get("conditions", [])
                return any(c.get("observedGeneration") == v["metadata"]["generation"]
                           for c in conds)

            written = wait_for("the new leader to write status", status_written, timeout=120)
            wait_for("traffic after the change", lambda: len(load.snapshot()) >= 20, timeout=30)
        finally:
            res = load.stop()
        during = [r for r in res if killed_at <= r[0] <= took_over]
        check(f"leader {leader} killed (SIGKILL, pod deleted): {new} ("
              + ("the other replica" if new == other else "the ReplicaSet's new replica")
              + ") takes the Lease over", new and new != leader)
        check("the gateway serves a change applied after the failover", served)
        check("the new leader writes the VirtualService's status", written)
        check(f"traffic never stops: {len(res)} requests, none failed, {len(during)} of them "
              "while no replica held the Lease", res and not failures(res) and during,
              failures(res)[:5])
        replaced = wait_for("the ReplicaSet to replace the killed replica", lambda: (
            lambda ps: len(ps) == 2 and leader not in [p["metadata"]["name"] for p in ps] and
            all(self.ready(p) for p in ps))(self.pods("skiff-system", "app=skiff-operator")),
            timeout=180)
        check("the ReplicaSet replaces the killed replica: 2 replicas Ready again", replaced)

    def run(self, deploy_only=False):
        steps = [self.deploy_skiff, self.deploy_coolstore]
        if not deploy_only:
            steps += [self.serves_catalog, self.least_privilege, self.injected,
                      self.chaos_and_routing, self.leader_failover, self.rollout_under_load,
                      self.webhook_refuses]
        for step in steps:
            try:
                phase(step.__name__, step)
            except Exception:  # a crashed step is a failed step
                check(step.__name__, False, traceback.format_exc())
                if step in (self.deploy_skiff, self.deploy_coolstore):
                    break


# --------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reuse", metavar="DIR", help="run on the cluster already up in DIR")
    ap.add_argument("--dir", help="cluster directory (default: a new temporary one)")
    ap.add_argument("--images", help="an image archive to use instead of building")
    ap.add_argument("--bench", type=int, default=0, help="apply -> traffic changes to measure")
    ap.add_argument("--keep", action="store_true", help="keep the directory (logs)")
    ap.add_argument("--deploy-only", action="store_true",
                    help="with --reuse: deploy skiff and the shop, run no story")
    args = ap.parse_args()

    if args.reuse:
        cluster = lc.Cluster(args.reuse)
        if not cluster.state or cluster.state.get("down"):
            print(f"story_test: no cluster up in {args.reuse}", file=sys.stderr)
            return 1
        Story(cluster).run(deploy_only=args.deploy_only)
        if args.bench:
            run_bench(cluster, args.bench)
        print(f"{RESULTS['passed']} passed, {RESULTS['failed']} failed")
        return 1 if RESULTS["failed"] else 0

    missing = lc.run(os.path.join(HERE, "env.sh"), "check", check=False)
    if missing.returncode != 0:
        print(f"story_test: SKIPPED: the local cluster needs Docker and the Go toolchain; "
              f"{missing.stdout.strip()}", flush=True)
        return SKIP
    d = args.dir or tempfile.mkdtemp(prefix="skiff-cluster-")
    cluster = lc.Cluster(d)
    t0 = time.monotonic()
    try:
        phase("build the cluster's binaries (cached)", lambda: subprocess.run(
            [os.path.join(HERE, "env.sh"), "build"], check=True, timeout=3600))
        images = args.images
        if not images:
            images = os.path.join(d, "images.tar")
            phase("build the images (dockerd, offline)", lambda: subprocess.run(
                [os.path.join(HERE, "images.sh"), "build", images], check=True, timeout=3600))
        phase("cluster up", cluster.up, images, 600)
        Story(cluster).run()
        if args.bench:
            phase("bench: apply -> traffic", run_bench, cluster, args.bench)
    except Exception:
        check("cluster", False, traceback.format_exc())
    finally:
        if cluster.state and not cluster.state.get("down"):
            if RESULTS["failed"]:
                cluster.dump_logs()
            problems = phase("cluster down", cluster.down)
            check("teardown: no process, mount, network namespace, interface or cgroup left",
                  not problems, problems)
        if not args.keep and not args.dir and not RESULTS["failed"]:
            shutil.rmtree(d, ignore_errors=True)
        elif os.path.isdir(d):
            if not args.images and not args.keep:  # the logs, not the 230 MB of images
                try:
                    os.remove(os.path.join(d, "images.tar"))
                except OSError:
                    pass
            print(f"story_test: logs kept in {d}/logs", flush=True)
    print("Phase times:")
    for name, took in PHASES:
        print(f"  {name:<44} {took:6.0f} s")
    print(f"  {'total':<44} {time.monotonic() - t0:6.0f} s")
    print(f"{RESULTS['passed']} passed, {RESULTS['failed']} failed")
    return 1 if RESULTS["failed"] else 0


def run_bench(cluster, n):
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import cluster_apply_bench  # noqa: E402

    cluster_apply_bench.run(cluster, n)


if __name__ == "__main__":
    sys.exit(main())
