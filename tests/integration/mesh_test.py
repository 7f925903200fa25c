#!/usr/bin/env python3
"""The coolstore story as a mesh with no app change, driven by the operator: pods are network
namespaces (netns_pods.py: 198.18.0.0/15, no route out), the operator (file source) runs in
a pod of its own and translates examples/coolstore (the Gateway, the catalog
VirtualService and DestinationRule, unchanged) plus the pods' Services, EndpointSlices and
Pods (ClusterIPs in 198.18.100.0/24) into sidecar configuration. Each app pod is what
`skiffctl inject` (the injection webhook's code) makes of a Pod manifest: its skiff-init
and skiff-proxy containers run with their args, users and downward-API environment (the
volume mounted at a test directory), and the coolstore app as uid 1000 with an empty
environment (no proxy variables)
and its default catalog URL (http://catalog.coolstore.svc.cluster.local:8080, which the
pod's /etc/hosts resolves to catalog's ClusterIP, as cluster DNS would).

Shows: client -> ingress gateway pod -> apigateway pod (inbound capture) -> apigateway ->
catalog's ClusterIP (outbound capture, routed by the VirtualService to subset v1) -> the
catalog pod (inbound capture) -> catalog; a tcp-* Service port proxied as TCP to its
endpoint, then split 50/50 with a second Service by a mesh VirtualService's tcp: route, and
a destination outside the mesh passed through; the seed's chaos 50% story:
about half the calls fail, then the retries scenario (copied over the VirtualService file)
brings failures within the binomial bound of 0.5^4; dark launch of v2 by header; inbound
metrics with reporter="destination" and the pod as destination workload on the catalog
sidecars and reporter="source" on apigateway's; the rewritten probes reach the app through
the sidecar's readiness port (a failing /health fails readyz; a stopped app fails the TCP
livez although its captured port still accepts); skiffctl proxy-status lists the sidecars
with their pod and namespace. gRPC through captured sidecars: coolstore-stock-client (the
gRPC C++ library) in the apigateway pod calls the stock Service by name (port named grpc,
routed as HTTP to an HTTP/2 cluster) -> the stock pod (inbound capture) -> coolstore-stock,
and apigateway's own GET /api/stock/ITEM (its gRPC Lookup, by the Service's name) from the
client through the ingress gateway; with chaos 50% UNAVAILABLE, Istio's default retries (2
on unavailable, ...) bring failures within the binomial bound of 0.5^3, scenario 8's
VirtualService (`retries: {attempts: 4, retryOn: unavailable}`, copied into the config
directory) within that of 0.5^5; istio_requests_total with request_protocol="grpc" and
grpc_response_status from both sidecars. Prints 'N passed, N failed'; exits 77 (skipped)
where the machine has no network namespaces or iptables."""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import netns_pods  # noqa: E402

ARGS = None
RESULTS = {"passed": 0, "failed": 0}
PY = netns_pods.SYSTEM_PYTHON
APP_UID = 1000
PROXY_UID = 1337
NS = "coolstore"
OPERATOR_IP = "198.18.0.2"
XDS = f"{OPERATOR_IP}:15010"
SERVICE_CIDR = "198.18.100.0/24"
# A TCP Service (port name tcp-*) whose endpoint is a plain echo server in the client pod,
# which has no sidecar; the client pod also serves HTTP on 9000 as a destination outside
# the mesh.
LEDGER_IP = "198.18.100.30"
LEDGER_V2_IP = "198.18.100.31"  # a second TCP Service (echo as "ledger-v2:", client pod :5001)
CLIENT_IP = "198.18.0.30"

# name, address, labels, the pod name the downward API gives its sidecar
PODS = {
    "gateway": ("198.18.0.5", {"istio": "ingressgateway"}, "istio-ingressgateway-5c8d7-q2w4x"),
    "apigateway": ("198.18.0.10", {"app": "apigateway", "version": "v1"},
                   "apigateway-v1-6d9f8b7c5-x7k2m"),
    "catalog-v1": ("198.18.0.20", {"app": "catalog", "version": "v1"},
                   "catalog-v1-7b6c5d4f9-h8j3n"),
    "catalog-v2": ("198.18.0.21", {"app": "catalog", "version": "v2"},
                   "catalog-v2-5f4e3d2c1-p9r6t"),
    "stock": ("198.18.0.40", {"app": "stock", "version": "v1"}, "stock-v1-8c7b6a5d4-w3z5q"),
    "client": (CLIENT_IP, {}, None),
}
# name: ClusterIP, port name, port (targetPort the same)
SERVICES = {"apigateway": ("198.18.100.10", "http", 8080),
            "catalog": ("198.18.100.20", "http", 8080),
            "stock": ("198.18.100.40", "grpc", 9090)}
STOCK_HOST = f"stock.{NS}.svc.cluster.local"


def check(name, cond, detail=""):
    if cond:
        RESULTS["passed"] += 1
        print(f"ok   {name}")
    else:
        RESULTS["failed"] += 1
        print(f"FAIL {name}\n     {str(detail)[:3000]}")


def wait_until(fn, timeout=60, interval=0.2):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    return last


def workloads_yaml():
    """What the Kubernetes API would hold for these pods: Services with ClusterIPs,
    EndpointSlices with the pods' addresses, and the Pods with their labels."""
    docs = []
    for svc, (ip, port_name, port) in SERVICES.items():
        docs.append(f"""apiVersion: v1
kind: Service
metadata: {{name: {svc}, namespace: {NS}, labels: {{app: {svc}}}}}
spec:
  selector: {{app: {svc}}}
  clusterIP: {ip}
  ports: [{{name: {port_name}, port: {port}, targetPort: {port}}}]""")
        eps = []
        for pod, (addr, labels, pod_name) in PODS.items():
            if labels.get("app") == svc:
                eps.append(f"""- addresses: [{addr}]
  conditions: {{ready: true}}
  targetRef: {{kind: Pod, name: {pod_name}, namespace: {NS}}}""")
        docs.append(f"""apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {svc}-pods
  namespace: {NS}
  labels: {{kubernetes.io/service-name: {svc}}}
addressType: IPv4
ports: [{{name: {port_name}, port: {port}}}]
endpoints:
""" + "\n".join(eps))
    docs.append(f"""apiVersion: v1
kind: Service
metadata: {{name: ledger, namespace: {NS}}}
spec:
  selector: {{app: ledger}}
  clusterIP: {LEDGER_IP}
  ports: [{{name: tcp-ledger, port: 5000}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ledger-pods
  namespace: {NS}
  labels: {{kubernetes.io/service-name: ledger}}
addressType: IPv4
ports: [{{name: tcp-ledger, port: 5000}}]
endpoints:
- addresses: [{CLIENT_IP}]
  conditions: {{ready: true}}""")
    docs.append(f"""apiVersion: v1
kind: Service
metadata: {{name: ledger-v2, namespace: {NS}}}
spec:
  selector: {{app: ledger-v2}}
  clusterIP: {LEDGER_V2_IP}
  ports: [{{name: tcp-ledger, port: 5000, targetPort: 5001}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ledger-v2-pods
  namespace: {NS}
  labels: {{kubernetes.io/service-name: ledger-v2}}
addressType: IPv4
ports: [{{name: tcp-ledger, port: 5001}}]
endpoints:
- addresses: [{CLIENT_IP}]
  conditions: {{ready: true}}""")
    for pod, (addr, labels, pod_name) in PODS.items():
        if pod_name and "app" in labels:
            docs.append(f"""apiVersion: v1
kind: Pod
metadata:
  name: {pod_name}
  namespace: {NS}
  labels: {json.dumps(labels)}
status: {{podIP: {addr}, conditions: [{{type: Ready, status: "True"}}]}}""")
    return "\n---\n".join(docs) + "\n"


class Mesh:
    def __init__(self, workdir):
        self.workdir = workdir
        self.cluster = netns_pods.Cluster()
        self.pods = {}
        self.logs = {}
        self.procs = {}
        self.injected = {}
        hosts = {f"{svc}.{NS}.svc.cluster.local": v[0] for svc, v in SERVICES.items()}
        self.operator_pod = self.cluster.add_pod("operator", OPERATOR_IP)
        for name, (addr, _, _) in PODS.items():
            self.pods[name] = self.cluster.add_pod(name, addr, service_cidrs=[SERVICE_CIDR],
                                                   hosts=hosts)

    def log(self, name):
        path = os.path.join(self.workdir, name + ".log")
        f = open(path, "a+")
        self.logs[name] = path
        return f

    def read_log(self, name):
        try:
            with open(self.logs[name]) as f:
                return f.read()
        except (KeyError, OSError):
            return ""

    def start(self, key, pod, argv, uid=None, env=None):
        """Starts argv in `pod` with exactly `env` (plus PATH) as its environment."""
        clean = ["env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin"]
        clean += [f"{k}={v}" for k, v in (env or {}).items()]
        self.procs[key] = pod.start(*clean, *argv, uid=uid, log=self.log(key))
        return self.procs[key]

    def client(self, pod, *args, uid=APP_UID, timeout=300):
        r = pod.run(PY, os.path.join(HERE, "mesh_client.py"), *args, uid=uid, timeout=timeout)
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]

    def admin(self, pod, path):
        r = self.client(pod, "get", f"http://127.0.0.1:15000{path}", "1", uid=0)
        return r[0] if r else {}


def start_operator(mesh, config):
    bin_dir = ARGS.bin_dir
    mesh.start("operator", mesh.operator_pod,
               [os.path.join(bin_dir, "operator/skiff-operator"), "--config-dir", config,
                "--xds-port", "15010", "--metrics-port", "15014", "--holdoff", "0s",
                "--watch-interval", "100ms"])


def injected_pod(mesh, name, image):
    """The pod as `skiffctl inject` makes it (the webhook's injection, offline), from a Pod
    manifest with the app's container and its probes (an HTTP app: readiness GET /health;
    the gRPC one: a TCP readiness probe)."""
    _, labels, pod_name = PODS[name]
    _, port_name, port = SERVICES[labels["app"]]
    readiness = ({"httpGet": {"path": "/health", "port": port_name}} if port_name == "http"
                 else {"tcpSocket": {"port": port_name}})
    manifest = os.path.join(mesh.workdir, f"{name}-pod.json")
    with open(manifest, "w") as f:
        json.dump({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": pod_name, "namespace": NS, "labels": labels},
                   "spec": {"containers": [{
                       "name": labels["app"], "image": image,
                       "ports": [{"name": port_name, "containerPort": port}],
                       "readinessProbe": readiness,
                       "livenessProbe": {"tcpSocket": {"port": port}, "timeoutSeconds": 2}}]}},
                  f)
    r = subprocess.run([os.path.join(ARGS.bin_dir, "cli/skiffctl"), "inject", "-f", manifest,
                        "-o", "json", "--xds-address", XDS], capture_output=True, text=True,
                       timeout=60)
    if r.returncode != 0:
        raise RuntimeError("skiffctl inject: " + r.stderr)
    return json.loads(r.stdout)


def start_sidecar_pod(mesh, name, app_argv):
    """Runs an injected pod: the skiff-init and skiff-proxy containers of `skiffctl inject`'s
    output with their args, users and environment (the downward API resolved: pod name,
    namespace, IP; its volume mounted at a directory of the test, the one path rewritten),
    and the app as uid 1000 with an empty environment."""
    pod = mesh.pods[name]
    addr, labels, pod_name = PODS[name]
    spec = injected_pod(mesh, name, "coolstore")["spec"]
    mesh.injected[name] = spec
    podinfo = os.path.join(mesh.workdir, f"{name}-podinfo")
    os.makedirs(podinfo)
    os.chmod(podinfo, 0o755)
    with open(os.path.join(podinfo, "labels"), "w") as f:  # key="value" lines, as the kubelet
        f.write("\n".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "\n")
    with open(os.path.join(podinfo, "annotations"), "w") as f:
        f.write('kubernetes.io/config.source="api"\n')
    for n in ("labels", "annotations"):
        os.chmod(os.path.join(podinfo, n), 0o644)

    def local(s):
        return s.replace("/etc/skiff/pod", podinfo)

    fields = {"metadata.name": pod_name, "metadata.namespace": NS, "status.podIP": addr}
    init = next(c for c in spec["initContainers"] if c["name"] == "skiff-init")
    assert init["command"] == ["/usr/local/bin/skiff-init"]
    init_run = pod.run(os.path.join(ARGS.bin_dir, "proxy/skiff-init"),
                       *[local(a) for a in init["args"]])
    sidecar = next(c for c in spec["containers"] if c["name"] == "skiff-proxy")
    env = {}
    for e in sidecar["env"]:
        env[e["name"]] = (local(e["value"]) if "value" in e
                          else fields[e["valueFrom"]["fieldRef"]["fieldPath"]])
    mesh.start(f"{name}-sidecar", pod,
               [os.path.join(ARGS.bin_dir, "proxy/skiff-proxy"),
                *[local(a) for a in sidecar["args"]], "--concurrency", "1"],
               uid=sidecar["securityContext"]["runAsUser"], env=env)
    mesh.start(name, pod, app_argv, uid=APP_UID)
    return init_run


def run(mesh, config):
    apps = os.path.join(ARGS.bin_dir, "examples", "coolstore", "apps")
    if not mesh.cluster.no_route_out():
        check("topology: no route out of the machine", False,
              [p.routes() for p in mesh.cluster.pods])
        return
    start_operator(mesh, config)
    inits = {}
    inits["catalog-v1"] = start_sidecar_pod(
        mesh, "catalog-v1", [os.path.join(apps, "coolstore-catalog"), "--address", "0.0.0.0",
                             "--port", "8080", "--version", "v1"])
    inits["catalog-v2"] = start_sidecar_pod(
        mesh, "catalog-v2", [os.path.join(apps, "coolstore-catalog"), "--address", "0.0.0.0",
                             "--port", "8080", "--version", "v2"])
    # apigateway with no flag but its listen address: its catalog URL is its default.
    inits["apigateway"] = start_sidecar_pod(
        mesh, "apigateway", [os.path.join(apps, "coolstore-apigateway"), "--address", "0.0.0.0",
                             "--port", "8080"])
    inits["stock"] = start_sidecar_pod(
        mesh, "stock", [os.path.join(apps, "coolstore-stock"), "--address", "0.0.0.0",
                        "--port", "9090", "--service-version", "v1"])
    servers = os.path.join(HERE, "capture_servers.py")
    mesh.start("ledger", mesh.pods["client"], [PY, servers, "echo", "0.0.0.0", "5000"],
               uid=APP_UID)
    mesh.start("ledger-v2", mesh.pods["client"],
               [PY, servers, "echo", "0.0.0.0", "5001", "ledger-v2"], uid=APP_UID)
    mesh.start("outside", mesh.pods["client"], [PY, servers, "http", "0.0.0.0", "9000", "outside"],
               uid=APP_UID)
    gw = mesh.pods["gateway"]
    mesh.start("gateway", gw, [os.path.join(ARGS.bin_dir, "proxy/skiff-proxy"), "--xds", XDS,
                               "--role", "gateway", "--node-id", PODS["gateway"][2] + "." + NS,
                               "--namespace", NS, "--concurrency", "1"])
    check("skiff-init wrote the capture rules in each app pod",
          all(r.returncode == 0 for r in inits.values()),
          {k: (r.stdout, r.stderr) for k, r in inits.items()})
    ready = {}
    for name in ("catalog-v1", "catalog-v2", "apigateway", "stock", "gateway"):
        ready[name] = wait_until(lambda n=name: mesh.admin(mesh.pods[n], "/ready").get("status")
                                 == 200, 90)
    check("every proxy got its configuration from the operator in the operator's pod",
          all(ready.values()),
          {n: mesh.read_log(n + ("" if n == "gateway" else "-sidecar"))[-1500:]
           for n, ok in ready.items() if not ok} or mesh.read_log("operator")[-2000:])

    # The apps' own environment and command lines: nothing about proxies.
    for name in ("apigateway", "catalog-v1"):
        pid = mesh.procs[name].pid
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().decode(errors="replace").split("\0")
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().decode(errors="replace").split("\0")
        check(f"{name} runs unchanged: no proxy variables, no proxy flag ({' '.join(cmd[1:])})",
              not any(e.split("=")[0].lower().endswith("_proxy") for e in env) and
              "--proxy" not in cmd and os.path.basename(cmd[0]).startswith("coolstore-"),
              (env, cmd))

    client = mesh.pods["client"]
    gateway_url = f"http://{PODS['gateway'][0]}/api/catalog"

    def calls(n, *headers):
        return mesh.client(client, "get", gateway_url, str(n), *headers)

    def version_of(r):
        try:
            items = json.loads(r["body"])
        except (KeyError, ValueError):
            return None
        return "v2" if items and all("imageUrl" in i for i in items) else "v1"

    first = wait_until(lambda: (lambda r: r and r[0].get("status") == 200 and r)(calls(1)), 60)
    check("client -> gateway -> apigateway -> catalog by its Service address: 200 from v1 "
          "(the VirtualService's subset)",
          first and version_of(first[0]) == "v1" and
          first[0]["headers"].get("x-catalog-version") == "v1",
          (first, mesh.read_log("apigateway")[-1500:], mesh.read_log("apigateway-sidecar")[-1500:]))
    r = calls(20)
    check("every call reaches v1 (20 of 20)",
          len(r) == 20 and all(x.get("status") == 200 and version_of(x) == "v1" for x in r),
          [x.get("status", x) for x in r])

    # How apigateway's call was served: captured by its sidecar, by the route.
    st = stats(mesh, "apigateway")
    check("apigateway's catalog calls were captured by its sidecar (outbound), routed to "
          "the v1 subset",
          st.get("cluster.outbound|8080|version-v1|catalog.coolstore.svc.cluster.local."
                 "upstream_rq_total", 0) >= 21, {k: v for k, v in st.items() if "catalog" in k})

    # A TCP Service by its ClusterIP, and a destination outside the mesh, from apigateway's
    # pod (as its app's uid): both captured by its sidecar.
    api_pod = mesh.pods["apigateway"]
    capture_client = os.path.join(HERE, "capture_client.py")
    ok = wait_until(lambda: "ready" in mesh.read_log("ledger") and
                    "ready" in mesh.read_log("ledger-v2") and
                    "ready" in mesh.read_log("outside"), 30)
    r = api_pod.run(PY, capture_client, "tcp", LEDGER_IP, "5000", "ping-ledger", uid=APP_UID)
    check("a Service port named tcp-* is proxied as TCP to its endpoint by the sidecar",
          ok and '"reply": "echo:ping-ledger"' in r.stdout, (r.stdout, r.stderr))
    # A mesh VirtualService's tcp: route (Istio's TCP traffic shifting, in the mesh): ledger's
    # connections split 50/50 with ledger-v2.
    vs = os.path.join(config, "ledger-virtualservice.yaml")
    with open(vs + ".tmp", "w") as f:
        f.write(f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ledger, namespace: {NS}}}
spec:
  hosts: [ledger]
  tcp:
  - match: [{{port: 5000}}]
    route:
    - {{destination: {{host: ledger}}, weight: 50}}
    - {{destination: {{host: ledger-v2}}, weight: 50}}
""")
    os.replace(vs + ".tmp", vs)

    def ledger_reply():
        r = api_pod.run(PY, capture_client, "tcp", LEDGER_IP, "5000", "ping", uid=APP_UID)
        for prefix in ("echo", "ledger-v2"):
            if f'"reply": "{prefix}:ping"' in r.stdout:
                return prefix
        return r.stdout + r.stderr
    shifted = wait_until(lambda: ledger_reply() == "ledger-v2", 60)
    replies = [ledger_reply() for _ in range(20)]
    check("a mesh tcp route with weights 50/50: ledger's connections reach both ledger and "
          "ledger-v2", bool(shifted) and "echo" in replies and "ledger-v2" in replies and
          all(x in ("echo", "ledger-v2") for x in replies), replies)
    r = api_pod.run(PY, capture_client, "http", f"http://{CLIENT_IP}:9000/x", uid=APP_UID)
    reply = json.loads(r.stdout.splitlines()[0]) if r.stdout.strip() else {}
    body = json.loads(reply["body"]) if reply.get("status") == 200 else {}
    st = stats(mesh, "apigateway")
    check("a destination that is no Service passes through unchanged (ALLOW_ANY): no sidecar "
          "headers, counted as passthrough",
          body.get("server") == "outside" and "x-request-id" not in body.get("headers", {}) and
          st.get("capture_passthrough_total", 0) >= 1, (r.stdout, r.stderr, st))

    # The injected pods' probes, rewritten to the sidecar's readiness port, which probes the
    # app (from the client pod, as the kubelet would: 15021 is never captured).
    app = mesh.injected["catalog-v1"]["containers"][0]
    check("the injected catalog pod's probes point at its sidecar",
          app["readinessProbe"]["httpGet"] == {"path": "/app-health/catalog/readyz",
                                               "port": 15021, "scheme": "HTTP"} and
          app["livenessProbe"]["httpGet"]["path"] == "/app-health/catalog/livez", app)
    v1_health = f"http://{PODS['catalog-v1'][0]}:15021/app-health/catalog"
    r = mesh.client(client, "get", v1_health + "/readyz", "1") + \
        mesh.client(client, "get", v1_health + "/livez", "1")
    check("the rewritten readiness (HTTP /health) and liveness (TCP 8080) probes reach the "
          "app: 200", len(r) == 2 and all(x.get("status") == 200 for x in r), r)
    sick = mesh.client(client, "post", f"http://{PODS['catalog-v1'][0]}:8080/blowup",
                       '{"active":true,"type":"500","percentage":100}')
    r = mesh.client(client, "get", v1_health + "/readyz", "1") + \
        mesh.client(client, "get", v1_health + "/livez", "1")
    check("with catalog's /health failing (chaos 100%), readyz answers its 500; livez (TCP) "
          "still 200", sick and len(r) == 2 and r[0].get("status") == 500 and
          r[1].get("status") == 200, (sick, r))

    # The seed's chaos story: v1 fails half its requests.
    blow = mesh.client(client, "post", f"http://{PODS['catalog-v1'][0]}:8080/blowup",
                       '{"active":true,"type":"500","percentage":50}')
    check("chaos switched on at catalog v1 (through its sidecar's inbound listener)",
          blow and blow[0].get("status") == 200 and '"percentage":50' in blow[0].get("body", ""),
          blow)
    n = 200
    r = calls(n)
    failed = sum(1 for x in r if x.get("status") != 200)
    lo, hi = n * 0.5 - 5 * math.sqrt(n * 0.25), n * 0.5 + 5 * math.sqrt(n * 0.25)
    check(f"chaos 50%, no retries on 500 (Istio's default policy): {failed}/{n} calls fail, "
          f"within [{lo:.0f}, {hi:.0f}]", len(r) == n and lo <= failed <= hi,
          [x.get("status", x) for x in r[:20]])

    vs_file = os.path.join(config, "catalog-virtualservice.yaml")

    def apply(scenario):
        shutil.copy(os.path.join(ROOT, "examples", "coolstore-scenarios", scenario),
                    vs_file + ".tmp")
        os.replace(vs_file + ".tmp", vs_file)

    def sidecar_has(marker):
        return marker in mesh.admin(mesh.pods["apigateway"], "/config_dump").get("body", "")

    apply("1-retries.yaml")
    check("the retries scenario reaches apigateway's sidecar",
          wait_until(lambda: sidecar_has('"numRetries": 3'), 60))
    r = calls(n)
    failed = sum(1 for x in r if x.get("status") != 200)
    bound = n * 0.5 ** 4 + 5 * math.sqrt(n * 0.0625 * 0.9375)
    check(f"retries (3 on 5xx): {failed}/{n} calls fail, within the binomial bound of 0.5^4 "
          f"(<= {bound:.0f})", len(r) == n and failed <= bound,
          [x.get("status", x) for x in r[:20]])
    st = stats(mesh, "apigateway")
    check("the sidecar counted its retries",
          st.get("cluster.outbound|8080|version-v1|catalog.coolstore.svc.cluster.local."
                 "upstream_rq_retry", 0) >= 30, {k: v for k, v in st.items() if "retry" in k})
    mesh.client(client, "post", f"http://{PODS['catalog-v1'][0]}:8080/blowup", '{"active":false}')

    apply("2-dark-launch.yaml")
    check("the dark launch scenario reaches apigateway's sidecar",
          wait_until(lambda: sidecar_has("x-dark-launch"), 60))
    dark = calls(10, "x-dark-launch:v2")
    plain = calls(10)
    check("dark launch: with 'x-dark-launch: v2' every call reaches v2",
          len(dark) == 10 and all(x.get("status") == 200 and version_of(x) == "v2" for x in dark),
          [(x.get("status"), version_of(x)) for x in dark])
    check("dark launch: without it every call still reaches v1",
          len(plain) == 10 and all(x.get("status") == 200 and version_of(x) == "v1"
                                   for x in plain), [(x.get("status"), version_of(x)) for x in plain])

    grpc_through_sidecars(mesh, config, apps)

    # Telemetry, as Istio's dashboards read it.
    prom = mesh.admin(mesh.pods["catalog-v1"], "/stats/prometheus").get("body", "")
    inbound = [ln for ln in prom.splitlines() if ln.startswith("istio_requests_total{") and
               'reporter="destination"' in ln]
    check('catalog v1\'s sidecar reports its inbound requests with reporter="destination", '
          'itself as destination workload, the Service as destination service',
          inbound and all('destination_workload="catalog-v1"' in ln and
                          'destination_service="catalog.coolstore.svc.cluster.local"' in ln and
                          'destination_version="v1"' in ln for ln in inbound) and
          any('response_code="500"' in ln for ln in inbound) and
          any('response_code="200"' in ln for ln in inbound), inbound or prom[-1500:])
    prom = mesh.admin(mesh.pods["catalog-v2"], "/stats/prometheus").get("body", "")
    check('catalog v2\'s sidecar reports the dark-launched requests (reporter="destination")',
          any(ln.startswith("istio_requests_total{") and 'reporter="destination"' in ln and
              'destination_workload="catalog-v2"' in ln for ln in prom.splitlines()), prom[-1500:])
    prom = mesh.admin(mesh.pods["apigateway"], "/stats/prometheus").get("body", "")
    outbound = [ln for ln in prom.splitlines() if ln.startswith("istio_requests_total{") and
                'reporter="source"' in ln and 'destination_service="catalog.' in ln]
    check('apigateway\'s sidecar reports its catalog calls with reporter="source", '
          'source_workload apigateway-v1 and the catalog pods as destinations',
          outbound and all('source_workload="apigateway-v1"' in ln for ln in outbound) and
          any('destination_workload="catalog-v1"' in ln for ln in outbound) and
          any('destination_workload="catalog-v2"' in ln for ln in outbound), outbound or prom[-1500:])
    inbound = [ln for ln in prom.splitlines() if ln.startswith("istio_requests_total{") and
               'reporter="destination"' in ln]
    check('... and the gateway\'s calls to apigateway as reporter="destination"',
          inbound and all('destination_workload="apigateway-v1"' in ln for ln in inbound),
          inbound or prom[-1500:])

    # Why TCP probes are rewritten: with catalog v2's app gone, a TCP connect to its port is
    # still accepted (by the sidecar's inbound listener), but its rewritten liveness probe
    # fails.
    v2 = mesh.procs["catalog-v2"]
    v2.terminate()
    v2.wait(timeout=30)
    v2_health = f"http://{PODS['catalog-v2'][0]}:15021/app-health/catalog/livez"
    r = mesh.client(client, "get", v2_health, "1")
    tcp = mesh.pods["client"].run(PY, "-c", "import socket; socket.create_connection("
                                  f"('{PODS['catalog-v2'][0]}', 8080), timeout=5); print('open')",
                                  uid=APP_UID)
    check("with catalog v2's app stopped, its rewritten TCP liveness probe fails (503) although "
          "its captured port still accepts connections",
          r and r[0].get("status") == 503 and "open" in tcp.stdout, (r, tcp.stdout, tcp.stderr))

    r = mesh.operator_pod.run(os.path.join(ARGS.bin_dir, "cli/skiffctl"), "proxy-status",
                              "--operator", "127.0.0.1:15010")
    lines = r.stdout.splitlines()
    want = [(PODS[p][2], "sidecar") for p in ("apigateway", "catalog-v1", "catalog-v2")]
    check("skiffctl proxy-status lists each sidecar with its pod and namespace, SYNCED",
          # one line per resource type (secrets, clusters, endpoints, listeners, routes):
          # each with the pod and namespace, every one SYNCED
          all(len(mine) >= 5 and all(f" {role} " in ln and f" {NS} " in ln and f" {pod} " in ln
                                     and " SYNCED " in ln for ln in mine)
              for pod, role in want
              for mine in [[ln for ln in lines if ln.split()[:1] == [f"{pod}.{NS}"]]]),
          r.stdout + r.stderr)


def named(config_dump, name, key):
    """The first object named `name` with a field `key` in a sidecar's /config_dump (a
    virtual host with its routes, a cluster with its protocol), or None."""
    def walk(o):
        if isinstance(o, dict):
            if o.get("name") == name and key in o:
                return o
            o = list(o.values())
        if isinstance(o, list):
            for x in o:
                found = walk(x)
                if found is not None:
                    return found
        return None
    try:
        return walk(json.loads(config_dump))
    except ValueError:
        return None


def grpc_through_sidecars(mesh, config, apps):
    """gRPC (the C++ library, h2c) from the apigateway pod's app uid to the stock Service by
    name: captured by apigateway's sidecar (outbound, original destination the ClusterIP,
    port named grpc: routed as HTTP to an HTTP/2 cluster), to the stock pod's inbound
    capture and its sidecar to the app; chaos 50% UNAVAILABLE with Istio's default retries
    and then a VirtualService's retries on unavailable, within binomial bounds."""
    api_pod = mesh.pods["apigateway"]
    target = f"{STOCK_HOST}:9090"

    def stock_client(*args):
        # As the other apps: an empty environment, the app's uid. (gRPC's default resolver,
        # c-ares, reads /etc/hosts, the pod's one that `ip netns exec` mounts: no
        # GRPC_DNS_RESOLVER needed.)
        argv = ["env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin",
                os.path.join(apps, "coolstore-stock-client"), "--target", target, *args]
        r = api_pod.run(*argv, uid=APP_UID, timeout=300)
        try:
            return json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {"error": (r.returncode, r.stdout[-1500:], r.stderr[-1500:])}

    def lookups(n):
        return stock_client("--calls", str(n))

    def ok_count(r):
        return r.get("codes", {}).get("0", 0)

    first = wait_until(lambda: (lambda r: ok_count(r) == 1 and r)(lookups(1)), 60, 0.5)
    check("gRPC: apigateway's pod -> stock by name (captured by its sidecar, HTTP/2 to the "
          "stock pod's inbound capture): OK from v1",
          first and first.get("versions") == {"v1": 1},
          (first, lookups(1), mesh.read_log("apigateway-sidecar")[-1500:],
           mesh.read_log("stock-sidecar")[-1500:]))
    n = 400
    r = lookups(n)
    check(f"gRPC: {n} of {n} lookups OK, every one from v1",
          r.get("codes") == {"0": n} and r.get("versions") == {"v1": n}, r)
    # (coolstore-stock speaks only HTTP/2: a lookup that succeeds went over HTTP/2.)
    st = stats(mesh, "apigateway")
    cluster = f"cluster.outbound|9090||{STOCK_HOST}."
    c = named(mesh.admin(api_pod, "/config_dump").get("body", ""),
              f"outbound|9090||{STOCK_HOST}", "service") or {}
    check("gRPC: the lookups went through apigateway's sidecar to the stock cluster, an "
          "HTTP/2 one", st.get(cluster + "upstream_rq_total", 0) >= n + 1 and
          c.get("protocol") == "HTTP2", ({k: v for k, v in st.items() if "stock" in k}, c))
    st = stats(mesh, "stock")
    c = named(mesh.admin(mesh.pods["stock"], "/config_dump").get("body", ""),
              "inbound|9090||", "service") or {}
    check("gRPC: ... and through the stock pod's sidecar (inbound, an HTTP/2 cluster) to the "
          "app", st.get("cluster.inbound|9090||.upstream_rq_total", 0) >= n + 1 and
          c.get("protocol") == "HTTP2", ({k: v for k, v in st.items() if "inbound" in k}, c))

    # The app's own gRPC call (apigateway's GET /api/stock/ITEM, its default stock address:
    # the Service's name) from the client through the ingress gateway.
    r = mesh.client(mesh.pods["client"], "get",
                    f"http://{PODS['gateway'][0]}/api/stock/329299", "20")
    check("gRPC: client -> gateway -> apigateway -> (its gRPC Lookup, captured) stock: 20 of "
          "20 answered 200 by v1",
          len(r) == 20 and all(x.get("status") == 200 and
                               x.get("headers", {}).get("x-stock-version") == "v1" and
                               '"itemId":"329299"' in x.get("body", "").replace(" ", "")
                               for x in r), (r[:3], mesh.read_log("apigateway")[-1500:]))

    chaos = stock_client("--set-chaos", "50:14")
    check("gRPC: chaos 50% UNAVAILABLE switched on at stock (SetChaos through the mesh)",
          chaos.get("code") == 0, chaos)

    def within(failed, p, two_sided):
        mean, sd = n * p, math.sqrt(n * p * (1 - p))
        lo = max(0, mean - 5 * sd) if two_sided else 0
        hi = mean + 5 * sd
        return lo <= failed <= hi, f"[{lo:.0f}, {hi:.0f}]"

    def chaos_phase(p, two_sided, what):
        """n lookups under chaos: their failures checked against the binomial bound of p."""
        r = lookups(n)
        failed = n - ok_count(r)
        ok, bound = within(failed, p, two_sided)
        check(f"gRPC chaos 50%, {what}: {failed}/{n} lookups fail, within the binomial bound",
              r.get("calls") == n and ok and set(r.get("codes", {})) <= {"0", "14"},
              (bound, r))
        return failed

    def retry_policy():
        vh = named(mesh.admin(api_pod, "/config_dump").get("body", ""), target, "routes")
        route = (vh or {}).get("routes") or [{}]
        return route[0].get("route", {}).get("retryPolicy", {})

    # No VirtualService for stock: Istio's default retry policy (2 retries on
    # connect-failure, refused-stream, unavailable, cancelled, retriable-status-codes).
    policy = retry_policy()
    check("gRPC: stock's default route has Istio's default retries (2, on unavailable)",
          policy.get("numRetries") == 2 and "unavailable" in policy.get("retryOn", []), policy)
    failed_default = chaos_phase(0.5 ** 3, True,
                                 "default retries (0.5^3), each failure UNAVAILABLE")

    # The demo's step 8, a new file next to the others: stock's VirtualService with
    # `retries: {attempts: 4, retryOn: unavailable}`.
    vs = os.path.join(config, "stock-virtualservice.yaml")
    shutil.copy(os.path.join(ROOT, "examples", "coolstore-scenarios", "8-grpc-retries.yaml"),
                vs + ".tmp")
    os.replace(vs + ".tmp", vs)
    check("gRPC: stock's VirtualService (4 retries on unavailable) reaches apigateway's sidecar",
          wait_until(lambda: (lambda p: p.get("numRetries") == 4 and
                              p.get("retryOn") == ["unavailable"])(retry_policy()), 60),
          retry_policy())
    failed_vs = chaos_phase(0.5 ** 5, False, "retries 4 on unavailable (0.5^5)")
    st = stats(mesh, "apigateway")
    check("gRPC: apigateway's sidecar counted its retries of stock",
          st.get(cluster + "upstream_rq_retry", 0) >= n // 4,
          {k: v for k, v in st.items() if "stock" in k and "retry" in k})

    # Telemetry of the gRPC calls: the source's view (one per call, after retries) and the
    # destination's (one per attempt).
    def count(lines, label):
        return int(sum(float(ln.rsplit(" ", 1)[1]) for ln in lines if label in ln))

    prom = mesh.admin(api_pod, "/stats/prometheus").get("body", "")
    source = [ln for ln in prom.splitlines() if ln.startswith("istio_requests_total{") and
              'reporter="source"' in ln and f'destination_service="{STOCK_HOST}"' in ln]
    failed = failed_default + failed_vs
    check(f'gRPC: apigateway\'s sidecar reports its stock calls (reporter="source", '
          f'request_protocol="grpc"): grpc_response_status "0", and "14" for the {failed} '
          f'that failed',
          source and all('request_protocol="grpc"' in ln and
                         'source_workload="apigateway-v1"' in ln and
                         'destination_workload="stock-v1"' in ln for ln in source) and
          count(source, 'grpc_response_status="0"') >= 2 * n and
          count(source, 'grpc_response_status="14"') == failed, source or prom[-1500:])
    prom = mesh.admin(mesh.pods["stock"], "/stats/prometheus").get("body", "")
    dest = [ln for ln in prom.splitlines() if ln.startswith("istio_requests_total{") and
            'reporter="destination"' in ln]
    check('gRPC: the stock pod\'s sidecar reports every attempt with reporter="destination", '
          'itself as destination workload, grpc_response_status "0" and "14" (more 14s than '
          'the source saw: the retried ones)',
          dest and all('destination_workload="stock-v1"' in ln and
                       'request_protocol="grpc"' in ln and
                       f'destination_service="{STOCK_HOST}"' in ln for ln in dest) and
          count(dest, 'grpc_response_status="0"') >= 2 * n and
          count(dest, 'grpc_response_status="14"') > failed, dest or prom[-1500:])
    retries = stats(mesh, "apigateway").get(cluster + "upstream_rq_retry", 0)
    check(f"gRPC: the stock pod saw each call once plus each of the {retries} retries "
          f"apigateway's sidecar counted ({count(source, 'istio_requests_total')} + {retries} "
          f"= {count(dest, 'istio_requests_total')})",
          count(dest, "istio_requests_total") == count(source, "istio_requests_total") + retries,
          (source, dest))

    clear = stock_client("--set-chaos", "0")
    check("gRPC: chaos cleared at stock", clear.get("code") == 0, clear)
    r = lookups(20)
    check("gRPC: with chaos cleared, 20 of 20 lookups OK", r.get("codes") == {"0": 20}, r)


def stats(mesh, name):
    body = mesh.admin(mesh.pods[name], "/stats").get("body", "")
    out = {}
    for line in body.splitlines():
        if ": " in line:
            k, v = line.rsplit(": ", 1)
            if v.isdigit():
                out[k] = int(v)
    return out


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ARGS = ap.parse_args()
    why = netns_pods.available()
    if why:
        print(f"SKIPPED: the mesh test needs network namespaces and iptables: {why}")
        sys.exit(77)
    workdir = tempfile.mkdtemp(prefix="skiff-mesh-")
    os.chmod(workdir, 0o755)
    config = os.path.join(workdir, "config")
    os.makedirs(config)
    example = os.path.join(ROOT, "examples", "coolstore")
    for name in ("gateway.yaml", "catalog-virtualservice.yaml", "catalog-destinationrule.yaml"):
        shutil.copy(os.path.join(example, name), config)
    with open(os.path.join(config, "workloads.yaml"), "w") as f:
        f.write(workloads_yaml())
    mesh = None
    try:
        mesh = Mesh(workdir)
        run(mesh, config)
    except Exception:
        check("mesh scenario", False, traceback.format_exc())
    finally:
        if mesh is not None:
            mesh.cluster.close()
        if RESULTS["failed"] == 0:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"     (logs kept in {workdir})")
    print(f"{RESULTS['passed']} passed, {RESULTS['failed']} failed")
    sys.exit(1 if RESULTS["failed"] else 0)


if __name__ == "__main__":
    main()
