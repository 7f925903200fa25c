#!/usr/bin/env python3
"""The networking.istio.io CRDs (crds/) against a real kube-apiserver + etcd, driven with kubectl.

Starts the test environment (tests/kube/env.sh) in a temporary directory, installs the CRDs,
then checks that Istio-style Gateway / VirtualService / DestinationRule objects are accepted
at v1, v1beta1 and v1alpha3 and read back unchanged at every version, that invalid ones are
rejected by the API server with a message naming the field, that the printer columns, short
names, categories and status subresource work, and that objects survive API server and etcd
restarts. Also checks RBAC and service-account tokens of the environment itself.

  crds_test.py --kube-env tests/kube/env.sh [--crds DIR] [--keep] [-k SUBSTRING]

Prints PASS/FAIL per check and 'N passed, N failed'; exits non-zero on any failure.
"""
import argparse
import copy
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crdwait  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
GROUP = "networking.istio.io"
VERSIONS = ["v1", "v1beta1", "v1alpha3"]
KINDS = {"Gateway": "gateways", "VirtualService": "virtualservices",
         "DestinationRule": "destinationrules", "ServiceEntry": "serviceentries"}
NS = "bookinfo"


class Failure(Exception):
    pass


# --- kubectl ----------------------------------------------------------------------------
class Kube:
    def __init__(self, kubeconfig, workdir):
        self.kubeconfig = kubeconfig
        self.workdir = workdir
        self.n = 0

    def run(self, *args, stdin=None, timeout=60, kubeconfig=True):
        cmd = ["kubectl"]
        if kubeconfig:
            cmd += ["--kubeconfig", self.kubeconfig]
        cmd += list(args)
        try:
            p = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Failure(f"timed out after {timeout}s: {' '.join(cmd)}")
        return p.returncode, p.stdout, p.stderr

    def ok(self, *args, **kw):
        rc, out, err = self.run(*args, **kw)
        if rc != 0:
            raise Failure(f"kubectl {' '.join(args)} failed ({rc}): {err.strip() or out.strip()}")
        return out

    def write(self, objs):
        self.n += 1
        path = os.path.join(self.workdir, f"manifest-{self.n}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"apiVersion": "v1", "kind": "List", "items": objs}, f, indent=1)
        return path

    def write_one(self, o):
        self.n += 1
        path = os.path.join(self.workdir, f"object-{self.n}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(o, f)
        return path

    def apply(self, objs, *extra):
        """Apply with strict server-side field validation: a field our schema lacks fails
        loudly instead of being pruned."""
        return self.run("apply", "--validate=strict", "-f", self.write(objs), *extra)

    def get_json(self, resource, name, ns=NS):
        return json.loads(self.ok("get", resource, name, "-n", ns, "-o", "json"))


# --- objects ----------------------------------------------------------------------------
def obj(version, kind, name, spec, ns=NS):
    return {"apiVersion": f"{GROUP}/{version}", "kind": kind,
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def bookinfo_v1alpha3():
    """Istio's bookinfo sample (gateway, productpage routes, reviews subsets), at v1alpha3."""
    return [
        obj("v1alpha3", "Gateway", "bookinfo-gateway", {
            "selector": {"istio": "ingressgateway"},
            "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"},
                         "hosts": ["*"]}],
        }),
        obj("v1alpha3", "VirtualService", "bookinfo", {
            "hosts": ["*"],
            "gateways": ["bookinfo-gateway"],
            "http": [{
                "match": [{"uri": {"exact": "/productpage"}}, {"uri": {"prefix": "/static"}},
                          {"uri": {"exact": "/login"}}, {"uri": {"exact": "/logout"}},
                          {"uri": {"prefix": "/api/v1/products"}}],
                "route": [{"destination": {"host": "productpage", "port": {"number": 9080}}}],
            }],
        }),
        obj("v1alpha3", "DestinationRule", "reviews", {
            "host": "reviews",
            "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}},
            "subsets": [
                {"name": "v1", "labels": {"version": "v1"}},
                {"name": "v2", "labels": {"version": "v2"},
                 "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}},
                {"name": "v3", "labels": {"version": "v3"}},
            ],
        }),
    ]


def bookinfo_v1():
    """The richer bookinfo task configs (request routing, fault injection, traffic shifting,
    timeouts, retries, mirroring, CORS, circuit breaking, TLS), at v1, plus one v1beta1."""
    return [
        obj("v1", "Gateway", "bookinfo-https", {
            "selector": {"istio": "ingressgateway"},
            "servers": [
                {"port": {"number": 80, "name": "http", "protocol": "HTTP"},
                 "hosts": ["bookinfo.example.com"], "tls": {"httpsRedirect": True}},
                {"port": {"number": 443, "name": "https", "protocol": "HTTPS"},
                 "hosts": ["./bookinfo.example.com", "*/reviews.example.com"],
                 "name": "https-bookinfo",
                 "tls": {"mode": "SIMPLE", "credentialName": "bookinfo-credential",
                         "minProtocolVersion": "TLSV1_2"}},
                {"port": {"number": 8443, "name": "mtls", "protocol": "HTTPS", "targetPort": 8443},
                 "hosts": ["*"], "bind": "127.0.0.1", "defaultEndpoint": "127.0.0.1:8080",
                 "tls": {"mode": "MUTUAL", "serverCertificate": "/etc/certs/server.pem",
                         "privateKey": "/etc/certs/key.pem", "caCertificates": "/etc/certs/ca.pem",
                         "subjectAltNames": ["spiffe://cluster.local/ns/a/sa/b"]}},
            ],
        }),
        obj("v1", "VirtualService", "reviews", {
            "hosts": ["reviews"],
            "http": [
                {"name": "jason",
                 "match": [{"headers": {"end-user": {"exact": "jason"}},
                            "queryParams": {"debug": {"regex": "^(1|true)$"}},
                            "withoutHeaders": {"x-skip": {"prefix": ""}},
                            "ignoreUriCase": True, "port": 9080,
                            "sourceLabels": {"app": "productpage"}, "gateways": ["mesh"],
                            "name": "jason-match",
                            "uri": {"prefix": "/reviews"}, "scheme": {"exact": "http"},
                            "method": {"exact": "GET"}, "authority": {"regex": "reviews(:9080)?"}}],
                 "fault": {"delay": {"fixedDelay": "7s", "percentage": {"value": 100.0}},
                           "abort": {"httpStatus": 500, "percentage": {"value": 0.1}}},
                 "route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
                {"name": "shift",
                 "route": [
                     {"destination": {"host": "reviews", "subset": "v1"}, "weight": 90,
                      "headers": {"request": {"set": {"x-canary": "no"}},
                                  "response": {"add": {"x-served-by": "v1"}, "remove": ["x-internal"]}}},
                     {"destination": {"host": "reviews", "subset": "v3"}, "weight": 10},
                 ],
                 "timeout": "0.5s",
                 "retries": {"attempts": 3, "perTryTimeout": "2s",
                             "retryOn": "gateway-error,connect-failure,refused-stream,503",
                             "retryRemoteLocalities": True},
                 "mirror": {"host": "reviews", "subset": "v3"},
                 "mirrorPercentage": {"value": 50.0},
                 "corsPolicy": {"allowOrigins": [{"exact": "https://example.com"}, {"regex": ".*\\.example\\.org"}],
                                "allowMethods": ["POST", "GET"], "allowHeaders": ["X-Foo-Bar"],
                                "exposeHeaders": ["X-Trace"], "maxAge": "24h",
                                "allowCredentials": False},
                 "headers": {"request": {"add": {"x-b3-sampled": "1"}}}},
            ],
        }),
        obj("v1", "VirtualService", "productpage-edge", {
            "hosts": ["bookinfo.example.com"],
            "gateways": ["bookinfo/bookinfo-https", "mesh"],
            "exportTo": ["."],
            "http": [
                {"match": [{"uri": {"exact": "/old"}}],
                 "redirect": {"uri": "/productpage", "authority": "bookinfo.example.com",
                              "redirectCode": 301, "scheme": "https", "port": 443}},
                {"match": [{"uri": {"prefix": "/health"}}],
                 "directResponse": {"status": 200, "body": {"string": "ok"}}},
                {"match": [{"uri": {"prefix": "/v1/"}}],
                 "rewrite": {"uri": "/", "authority": "productpage"},
                 "mirrors": [{"destination": {"host": "shadow", "port": {"number": 8080}},
                              "percentage": {"value": 5}}],
                 "route": [{"destination": {"host": "productpage.bookinfo.svc.cluster.local",
                                            "port": {"number": 9080}}}]},
                {"match": [{"uri": {"regex": "^/u/[0-9]+$"}}],
                 "rewrite": {"uriRegexRewrite": {"match": "^/u/([0-9]+)$", "rewrite": "/user/\\1"}},
                 "route": [{"destination": {"host": "users"}}]},
                {"match": [{"uri": {"prefix": "/details"}}],
                 "delegate": {"name": "details", "namespace": NS}},
                {"fault": {"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 1}},
                           "delay": {"fixedDelay": "1m30s", "percent": 5}},
                 "route": [{"destination": {"host": "productpage"}}]},
            ],
            "tcp": [{"match": [{"port": 27017, "sourceSubnet": "10.0.0.0/8"}],
                     "route": [{"destination": {"host": "mongo", "port": {"number": 5555}}, "weight": 100}]}],
            "tls": [{"match": [{"sniHosts": ["login.bookinfo.com"], "port": 443}],
                     "route": [{"destination": {"host": "login"}}]}],
        }),
        obj("v1", "DestinationRule", "productpage", {
            "host": "productpage.bookinfo.svc.cluster.local",
            "exportTo": ["*"],
            "trafficPolicy": {
                "loadBalancer": {"consistentHash": {"httpCookie": {"name": "user", "path": "/",
                                                                   "ttl": "0s"}}},
                "connectionPool": {"tcp": {"maxConnections": 100, "connectTimeout": "30ms",
                                           "tcpKeepalive": {"time": "7200s", "interval": "75s"}},
                                   "http": {"http1MaxPendingRequests": 1, "http2MaxRequests": 1000,
                                            "maxRequestsPerConnection": 10, "maxRetries": 3,
                                            "idleTimeout": "1h", "h2UpgradePolicy": "UPGRADE"}},
                "outlierDetection": {"consecutive5xxErrors": 7, "consecutiveGatewayErrors": 3,
                                     "interval": "5m", "baseEjectionTime": "15m",
                                     "maxEjectionPercent": 100, "minHealthPercent": 0},
                "tls": {"mode": "ISTIO_MUTUAL"},
                "portLevelSettings": [{"port": {"number": 9080},
                                       "loadBalancer": {"simple": "LEAST_REQUEST"},
                                       "connectionPool": {"tcp": {"maxConnections": 10}}}],
            },
            "subsets": [
                {"name": "v1", "labels": {"version": "v1"},
                 "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}}}},
                {"name": "v2", "labels": {"version": "v2"},
                 "trafficPolicy": {"loadBalancer": {"consistentHash": {"useSourceIp": True}}}},
            ],
            "workloadSelector": {"matchLabels": {"app": "frontend"}},
        }),
        obj("v1beta1", "DestinationRule", "ratings", {
            "host": "ratings",
            "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpQueryParameterName": "u"},
                                               "warmupDurationSecs": "30s"},
                              "tls": {"mode": "SIMPLE", "sni": "ratings.example.com"}},
        }),
        # Egress to an external API (as bookinfo's egress-rule-google-apis.yaml) and a VM's
        # database with every endpoint field.
        obj("v1", "ServiceEntry", "googleapis", {
            "hosts": ["www.googleapis.com"],
            "ports": [{"number": 80, "name": "http", "protocol": "HTTP"},
                      {"number": 443, "name": "https", "protocol": "HTTPS"}],
            "location": "MESH_EXTERNAL",
            "resolution": "DNS",
        }),
        # Fields Istio's CRDs carry that a tutorial may use, though skiff does not serve
        # them all (the webhook warns): ECDH curves, utilization-based balancing, the
        # proto-named mirror_percent and DYNAMIC_DNS.
        obj("v1", "Gateway", "curves", {
            "selector": {"istio": "ingressgateway"},
            "servers": [{"port": {"number": 443, "name": "https", "protocol": "HTTPS"},
                         "hosts": ["curves.example.com"],
                         "tls": {"mode": "SIMPLE", "credentialName": "c",
                                 "ecdhCurves": ["X25519", "P-256"]}}],
        }),
        obj("v1", "DestinationRule", "orca", {
            "host": "reviews",
            "trafficPolicy": {"loadBalancer": {"backendUtilization": {
                "weightUpdatePeriod": "1s", "weightExpirationPeriod": "3m",
                "weightStabilizationPeriod": "10s", "errorUtilizationPenaltyPercent": 10,
                "metricNamesForComputingUtilization": ["cpu_utilization"]}}},
        }),
        obj("v1", "VirtualService", "mirror-old", {
            "hosts": ["reviews"],
            "http": [{"route": [{"destination": {"host": "reviews"}}],
                      "mirror": {"host": "reviews", "subset": "v2"}, "mirror_percent": 20}],
        }),
        obj("v1", "ServiceEntry", "dynamic", {
            "hosts": ["*.wikipedia.org"],
            "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}],
            "resolution": "DYNAMIC_DNS",
        }),
        obj("v1beta1", "ServiceEntry", "vm-db", {
            "hosts": ["db.vm.internal"],
            "addresses": ["240.0.0.5"],
            "ports": [{"number": 5432, "name": "tcp-pg", "protocol": "TCP", "targetPort": 15432}],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "endpoints": [{"address": "10.1.0.5", "ports": {"tcp-pg": 5433},
                           "labels": {"version": "v1"}, "network": "n1",
                           "locality": "us-east1/us-east1-b", "weight": 10,
                           "serviceAccount": "db"}],
            "exportTo": ["."],
            "subjectAltNames": ["spiffe://cluster.local/ns/bookinfo/sa/db"],
        }),
    ]


def invalid_cases():
    """(name, object, substrings the API server's error must contain)."""
    route = [{"destination": {"host": "reviews"}}]
    return [
        ("redirect and route together",
         obj("v1", "VirtualService", "bad-redirect-route", {
             "hosts": ["reviews"],
             "http": [{"redirect": {"uri": "/x"}, "route": route}]}),
         ["spec.http[0]", "redirect and route are mutually exclusive"]),
        ("weight beyond int32",
         obj("v1alpha3", "VirtualService", "bad-weight", {
             "hosts": ["reviews"],
             "http": [{"route": [{"destination": {"host": "reviews"}, "weight": 2147483648}]}]}),
         ["spec.http[0].route[0].weight", "less than or equal to 2147483647"]),
        ("negative weight",
         obj("v1", "VirtualService", "bad-neg-weight", {
             "http": [{"route": [{"destination": {"host": "reviews"}, "weight": -1}]}]}),
         ["spec.http[0].route[0].weight", "greater than or equal to 0"]),
        ("negative retry attempts",
         obj("v1", "VirtualService", "bad-attempts", {
             "http": [{"route": route, "retries": {"attempts": -1}}]}),
         ["spec.http[0].retries.attempts", "greater than or equal to 0"]),
        ("abort httpStatus 700",
         obj("v1", "VirtualService", "bad-abort", {
             "http": [{"route": route, "fault": {"abort": {"httpStatus": 700}}}]}),
         ["spec.http[0].fault.abort.httpStatus", "less than or equal to 600"]),
        ("fault percentage 101",
         obj("v1", "VirtualService", "bad-percentage", {
             "http": [{"route": route, "fault": {"delay": {"fixedDelay": "1s",
                                                           "percentage": {"value": 101}}}}]}),
         ["spec.http[0].fault.delay.percentage.value", "less than or equal to 100"]),
        ("string match with exact and prefix",
         obj("v1", "VirtualService", "bad-stringmatch", {
             "http": [{"match": [{"uri": {"exact": "/a", "prefix": "/b"}}], "route": route}]}),
         ["spec.http[0].match[0].uri", "oneOf"]),
        ("route destination without host",
         obj("v1", "VirtualService", "bad-dest", {
             "http": [{"route": [{"destination": {"subset": "v1"}}]}]}),
         ["spec.http[0].route[0].destination.host", "Required value"]),
        ("unknown VirtualService field",
         obj("v1", "VirtualService", "bad-unknown", {
             "http": [{"route": route, "retry": {"attempts": 1}}]}),
         ['unknown field "spec.http[0].retry"']),
        ("service entry without hosts",
         obj("v1", "ServiceEntry", "bad-se-hosts", {"hosts": []}),
         ["spec.hosts"]),
        ("service entry with an unknown resolution",
         obj("v1", "ServiceEntry", "bad-se-resolution",
             {"hosts": ["a.example.com"], "resolution": "MAGIC"}),
         ["spec.resolution", "MAGIC"]),
        ("gateway server missing port",
         obj("v1", "Gateway", "bad-no-port", {
             "selector": {"istio": "ingressgateway"}, "servers": [{"hosts": ["*"]}]}),
         ["spec.servers[0].port", "Required value"]),
        ("gateway server missing hosts",
         obj("v1alpha3", "Gateway", "bad-no-hosts", {
             "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}}]}),
         ["spec.servers[0].hosts", "Required value"]),
        ("gateway port number 70000",
         obj("v1", "Gateway", "bad-port-number", {
             "servers": [{"port": {"number": 70000, "name": "http", "protocol": "HTTP"},
                          "hosts": ["*"]}]}),
         ["spec.servers[0].port.number", "less than or equal to 65535"]),
        ("gateway bad TLS mode",
         obj("v1", "Gateway", "bad-tls-mode", {
             "servers": [{"port": {"number": 443, "name": "https", "protocol": "HTTPS"},
                          "hosts": ["*"], "tls": {"mode": "STRICT"}}]}),
         ["spec.servers[0].tls.mode", 'Unsupported value: "STRICT"']),
        ("destination rule subset without name",
         obj("v1", "DestinationRule", "bad-subset", {
             "host": "reviews", "subsets": [{"labels": {"version": "v1"}}]}),
         ["spec.subsets[0].name", "Required value"]),
        ("destination rule without host",
         obj("v1", "DestinationRule", "bad-no-host", {
             "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}),
         ["spec.host", "Required value"]),
        ("destination rule bad LB",
         obj("v1beta1", "DestinationRule", "bad-lb", {
             "host": "reviews",
             "trafficPolicy": {"loadBalancer": {"simple": "FASTEST"},
                               "outlierDetection": {"baseEjectionTime": "30 seconds"}}}),
         ['spec.trafficPolicy.loadBalancer.simple', 'Unsupported value: "FASTEST"']),
        # Istio's own CEL rules, with its messages.
        ("route timeout 0s",
         obj("v1", "VirtualService", "bad-timeout", {
             "hosts": ["reviews"], "http": [{"route": route, "timeout": "0s"}]}),
         ["spec.http[0].timeout", "must be a valid duration greater than 1ms"]),
        ("connect timeout 100us",
         obj("v1", "DestinationRule", "bad-connect-timeout", {
             "host": "reviews",
             "trafficPolicy": {"connectionPool": {"tcp": {"connectTimeout": "100us"}}}}),
         ["spec.trafficPolicy.connectionPool.tcp.connectTimeout",
          "must be a valid duration greater than 1ms"]),
        ("destination rule workloadSelector with a wildcard value",
         obj("v1", "DestinationRule", "bad-selector", {
             "host": "reviews", "workloadSelector": {"matchLabels": {"app": "*"}}}),
         ["spec.workloadSelector.matchLabels", "wildcard not allowed in label value match"]),
        ("service entry host *",
         obj("v1", "ServiceEntry", "bad-se-star", {"hosts": ["*"]}),
         ["spec.hosts[0]", "hostname cannot be wildcard"]),
        ("service entry port name twice",
         obj("v1", "ServiceEntry", "bad-se-ports", {
             "hosts": ["a.example.com"],
             "ports": [{"number": 80, "name": "http"}, {"number": 81, "name": "http"}]}),
         ["spec.ports[1]", "Duplicate value"]),
        ("service entry port number twice",
         obj("v1", "ServiceEntry", "bad-se-numbers", {
             "hosts": ["a.example.com"],
             "ports": [{"number": 80, "name": "a"}, {"number": 80, "name": "b"}]}),
         ["spec.ports", "port number cannot be duplicated"]),
        ("service entry NONE with endpoints",
         obj("v1", "ServiceEntry", "bad-se-none", {
             "hosts": ["a.example.com"], "endpoints": [{"address": "1.2.3.4"}]}),
         ["spec", "NONE mode cannot set endpoints"]),
        ("service entry CIDR with DNS",
         obj("v1", "ServiceEntry", "bad-se-cidr", {
             "hosts": ["a.example.com"], "addresses": ["10.0.0.0/8"], "resolution": "DNS"}),
         ["spec", "CIDR addresses are allowed only for NONE/STATIC resolution types"]),
        ("service entry endpoint without address",
         obj("v1", "ServiceEntry", "bad-se-endpoint", {
             "hosts": ["a.example.com"], "resolution": "STATIC",
             "endpoints": [{"labels": {"a": "b"}}]}),
         ["spec.endpoints[0]", "Address is required"]),
        ("destination rule maxEjectionPercent 101",
         obj("v1", "DestinationRule", "bad-ejection", {
             "host": "reviews",
             "trafficPolicy": {"outlierDetection": {"maxEjectionPercent": 101}}}),
         ["spec.trafficPolicy.outlierDetection.maxEjectionPercent", "less than or equal to 100"]),
    ]


# --- checks -----------------------------------------------------------------------------
class Runner:
    def __init__(self, only):
        self.passed = 0
        self.failed = 0
        self.only = only

    def check(self, name, fn):
        if self.only and self.only not in name:
            return
        t0 = time.monotonic()
        try:
            fn()
        except Failure as e:
            self.failed += 1
            print(f"FAIL {name}: {e}", flush=True)
            return
        except Exception as e:  # a bug in the test or an unexpected answer: still a failure
            self.failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
            return
        self.passed += 1
        print(f"PASS {name} ({time.monotonic() - t0:.1f}s)", flush=True)


def expect(cond, msg):
    if not cond:
        raise Failure(msg)


def resource(kind, version=None):
    plural = KINDS[kind]
    return f"{plural}.{version}.{GROUP}" if version else f"{plural}.{GROUP}"


def check_crds_installed(kube, crds):
    kube.ok("apply", "-k", crds)
    crdwait.wait_established(lambda *a: kube.ok("get", *a),
                             [f"{p}.{GROUP}" for p in KINDS.values()])
    for kind, plural in KINDS.items():
        crd = json.loads(kube.ok("get", "crd", f"{plural}.{GROUP}", "-o", "json"))
        conds = {c["type"]: c for c in crd["status"].get("conditions", [])}
        expect(conds.get("Established", {}).get("status") == "True", f"{plural}: not Established")
        expect(conds.get("NamesAccepted", {}).get("status") == "True", f"{plural}: names not accepted")
        expect("NonStructuralSchema" not in conds,
               f"{plural}: non-structural schema: {conds.get('NonStructuralSchema')}")
        versions = crd["spec"]["versions"]
        expect([v["name"] for v in versions] == VERSIONS, f"{plural}: versions {versions}")
        expect([v["name"] for v in versions if v["storage"]] == ["v1"], f"{plural}: storage not v1")
        expect(all(v["served"] for v in versions), f"{plural}: a version is not served")
        schemas = [json.dumps(v["schema"], sort_keys=True) for v in versions]
        expect(len(set(schemas)) == 1, f"{plural}: versions have different schemas")
        expect(all(v.get("subresources", {}).get("status") == {} for v in versions),
               f"{plural}: no status subresource")
        names = crd["spec"]["names"]
        expect(sorted(names.get("categories", [])) == ["istio-io", "networking-istio-io"],
               f"{plural}: categories {names.get('categories')}")
        expect(crd["spec"]["scope"] == "Namespaced", f"{plural}: not namespaced")


def apply_valid(kube, objs):
    rc, out, err = kube.apply(objs)
    expect(rc == 0, f"rejected: {err.strip()}")
    expect("Warning" not in err, f"warnings: {err.strip()}")


def check_round_trip(kube, objs):
    """Every object reads back at v1, v1beta1 and v1alpha3 with exactly the spec applied
    (nothing pruned, nothing defaulted)."""
    for o in objs:
        for v in VERSIONS:
            got = kube.get_json(resource(o["kind"], v), o["metadata"]["name"])
            expect(got["apiVersion"] == f"{GROUP}/{v}",
                   f"{o['metadata']['name']}: apiVersion {got['apiVersion']} at {v}")
            if got["spec"] != o["spec"]:
                raise Failure(f"{o['kind']}/{o['metadata']['name']} at {v}: spec differs:\n"
                              f"  applied: {json.dumps(o['spec'], sort_keys=True)}\n"
                              f"  read:    {json.dumps(got['spec'], sort_keys=True)}")


def check_invalid(kube, name, o, needles):
    """POSTed as is (no client-side validation by kubectl): the API server must refuse it."""
    path = kube.write_one(o)
    url = f"/apis/{o['apiVersion']}/namespaces/{NS}/{KINDS[o['kind']]}?fieldValidation=Strict"
    rc, out, err = kube.run("create", "--raw", url, "-f", path)
    expect(rc != 0, f"accepted an invalid object: {out.strip()}")
    for n in needles:
        expect(n in err, f"error does not mention {n!r}: {err.strip()}")
    rc, _, err2 = kube.run("get", resource(o["kind"]), o["metadata"]["name"], "-n", NS)
    expect(rc != 0 and "NotFound" in err2, "the rejected object was stored anyway")
    shown = [l for l in err.splitlines() if needles[0] in l] or err.strip().splitlines()
    print(f"     {shown[0].strip()[:300]}")


def table(kube, *args):
    out = kube.ok("get", *args, "-n", NS)
    lines = [l for l in out.splitlines() if l.strip()]
    return [re.split(r"\s{2,}", l.strip()) for l in lines]


def check_printer_columns(kube):
    rows = table(kube, "vs")
    expect(rows[0] == ["NAME", "GATEWAYS", "HOSTS", "AGE"], f"vs columns: {rows[0]}")
    byname = {r[0]: r for r in rows[1:]}
    expect(byname.get("bookinfo", [None] * 3)[1:3] == ['["bookinfo-gateway"]', '["*"]'],
           f"vs bookinfo row: {byname.get('bookinfo')}")
    expect(byname.get("reviews", [None] * 2)[1] == '["reviews"]' or
           byname.get("reviews", [None] * 3)[2] == '["reviews"]', f"vs reviews row: {byname.get('reviews')}")
    rows = table(kube, "dr")
    expect(rows[0] == ["NAME", "HOST", "AGE"], f"dr columns: {rows[0]}")
    byname = {r[0]: r for r in rows[1:]}
    expect(byname.get("reviews", [None, None])[1] == "reviews", f"dr reviews row: {byname.get('reviews')}")
    rows = table(kube, "se")
    expect(rows[0] == ["NAME", "HOSTS", "LOCATION", "RESOLUTION", "AGE"], f"se columns: {rows[0]}")
    byname = {r[0]: r for r in rows[1:]}
    expect(byname.get("vm-db", [None] * 4)[1:4] == ['["db.vm.internal"]', "MESH_INTERNAL", "STATIC"],
           f"se vm-db row: {byname.get('vm-db')}")
    rows = table(kube, "gw")
    expect(rows[0] == ["NAME", "AGE"], f"gw columns: {rows[0]}")
    expect({"bookinfo-gateway", "bookinfo-https"} <= {r[0] for r in rows[1:]}, f"gw rows: {rows}")


def check_names_and_categories(kube, objs):
    want = {f"{o['kind'].lower()}.{GROUP}/{o['metadata']['name']}" for o in objs}
    for what in ("gw,vs,dr,se", "istio-io", "networking-istio-io"):
        got = set(kube.ok("get", what, "-n", NS, "-o", "name").split())
        expect(want <= got, f"kubectl get {what}: missing {sorted(want - got)}")


def check_status_subresource(kube):
    name = "reviews"
    before = kube.get_json(resource("DestinationRule"), name)
    status = {"observedGeneration": before["metadata"]["generation"],
              "conditions": [{"type": "Reconciled", "status": "True", "reason": "Accepted",
                              "message": "test"}]}
    kube.ok("patch", resource("DestinationRule"), name, "-n", NS, "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": status}))
    after = kube.get_json(resource("DestinationRule"), name)
    expect(after.get("status") == status, f"status not stored: {after.get('status')}")
    expect(after["metadata"]["generation"] == before["metadata"]["generation"],
           "a status write bumped the generation")
    # A status change through the main resource is ignored (status subresource semantics).
    kube.ok("patch", resource("DestinationRule"), name, "-n", NS, "--type=merge",
            "-p", json.dumps({"status": {"conditions": []}}))
    expect(kube.get_json(resource("DestinationRule"), name).get("status") == status,
           "status was changed through the main resource")


def check_examples(kube, workdir):
    """The project's own Istio example configs are accepted (server-side dry run)."""
    docs = []
    files = sorted(glob.glob(os.path.join(ROOT, "examples", "**", "*.yaml"), recursive=True))
    for path in files:
        with open(path, encoding="utf-8") as f:
            for doc in re.split(r"^---\s*$", f.read(), flags=re.M):
                if re.search(rf"^apiVersion:\s*{re.escape(GROUP)}/", doc, flags=re.M) and \
                        re.search(r"^kind:\s*(Gateway|VirtualService|DestinationRule)\s*$", doc, flags=re.M):
                    docs.append(doc)
    expect(docs, "no Istio example configs found under examples/")
    for ns in sorted(set(re.findall(r"^  namespace:\s*(\S+)\s*$", "\n".join(docs), flags=re.M))):
        rc, _, err = kube.run("create", "namespace", ns)
        expect(rc == 0 or "AlreadyExists" in err, f"create namespace {ns}: {err}")
    path = os.path.join(workdir, "examples.yaml")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n---\n".join(docs))
    rc, out, err = kube.run("apply", "--dry-run=server", "--validate=strict", "-f", path)
    expect(rc == 0, f"examples rejected: {err.strip()}")
    expect("Warning" not in err, f"warnings: {err.strip()}")
    print(f"     {len(docs)} example objects accepted")


def check_rbac_and_tokens(kube, env_dir):
    """RBAC is enforced and service-account tokens (signing key pair) work: a token for a
    fresh ServiceAccount is forbidden to list VirtualServices until a Role grants it."""
    kube.ok("create", "serviceaccount", "skiff-test-reader", "-n", NS)
    token = kube.ok("create", "token", "skiff-test-reader", "-n", NS, "--duration=10m").strip()
    server = json.loads(kube.ok("config", "view", "--raw", "-o", "json"))["clusters"][0]["cluster"]["server"]
    as_sa = ["--kubeconfig", os.devnull, "--server", server,
             "--certificate-authority", os.path.join(env_dir, "pki", "ca.crt"), "--token", token]
    rc, _, err = kube.run(*as_sa, "get", "vs", "-n", NS, kubeconfig=False)
    expect(rc != 0 and "forbidden" in err.lower(), f"expected forbidden, got rc={rc}: {err.strip()}")
    expect("system:serviceaccount:bookinfo:skiff-test-reader" in err, f"not the SA identity: {err}")
    kube.ok("create", "role", "istio-reader", "-n", NS, "--verb=get,list,watch",
            "--resource=virtualservices.networking.istio.io")
    kube.ok("create", "rolebinding", "istio-reader", "-n", NS, "--role=istio-reader",
            "--serviceaccount=bookinfo:skiff-test-reader")
    deadline = time.monotonic() + 10
    while True:  # RBAC caches settle within a moment
        rc, out, err = kube.run(*as_sa, "get", "vs", "-n", NS, "-o", "name", kubeconfig=False)
        if rc == 0:
            break
        expect(time.monotonic() < deadline, f"still denied after the RoleBinding: {err.strip()}")
        time.sleep(0.2)
    expect("virtualservice.networking.istio.io/bookinfo" in out, f"list as SA: {out}")
    rc, _, err = kube.run(*as_sa, "get", "dr", "-n", NS, kubeconfig=False)
    expect(rc != 0 and "forbidden" in err.lower(), "DestinationRules should still be forbidden")


def object_names(kube):
    return set(kube.ok("get", "gw,vs,dr,se", "-n", NS, "-o", "name").split())


def check_restart(env, kube, env_dir, expected):
    url_before = kube.ok("config", "view", "-o", "jsonpath={.clusters[0].cluster.server}")
    env("stop-apiserver", env_dir)
    rc, _, _ = kube.run("get", "vs", "-n", NS, "--request-timeout=3s")
    expect(rc != 0, "kubectl still works after stop-apiserver")
    env("start-apiserver", env_dir)
    got = object_names(kube)
    expect(expected <= got, f"after API server restart, missing {sorted(expected - got)}")
    env("stop", env_dir)
    env("start", env_dir)
    got = object_names(kube)
    expect(expected <= got, f"after etcd + API server restart, missing {sorted(expected - got)}")
    url_after = kube.ok("config", "view", "-o", "jsonpath={.clusters[0].cluster.server}")
    expect(url_before == url_after, f"server URL changed: {url_before} -> {url_after}")


# --- main -------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kube-env", required=True, help="path to tests/kube/env.sh")
    ap.add_argument("--crds", default=os.path.join(ROOT, "crds"),
                    help="the CRD kustomization directory (default: the repo's crds/)")
    ap.add_argument("--keep", action="store_true", help="keep the environment directory")
    ap.add_argument("-k", dest="only", default="", help="run only checks whose name contains this")
    ap.add_argument("--build-timeout", type=int, default=3600,
                    help="seconds allowed for 'env.sh build' when the binaries are not cached")
    args = ap.parse_args()
    env_sh = os.path.abspath(args.kube_env)
    if shutil.which("kubectl") is None:
        print("kubectl is not installed\n0 passed, 1 failed")
        return 1

    def env(*a, timeout=180):
        p = subprocess.run([env_sh, *a], capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise Failure(f"env.sh {' '.join(a)} failed ({p.returncode}): {p.stderr.strip()[-3000:]}")
        return p.stdout.strip()

    # ctest's timeout sends SIGTERM first: stop the servers on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    runner = Runner(args.only)
    work = tempfile.mkdtemp(prefix="skiff-kube-crds-")
    env_dir = os.path.join(work, "env")
    started = False
    try:
        t0 = time.monotonic()
        env("build", timeout=args.build_timeout)  # a no-op when the binaries are cached
        kubeconfig = env("start", env_dir).splitlines()[-1]
        started = True
        print(f"environment up in {time.monotonic() - t0:.1f}s: {kubeconfig}", flush=True)
        kube = Kube(kubeconfig, work)

        runner.check("CRDs install and are Established, structural, identical across versions",
                     lambda: check_crds_installed(kube, args.crds))
        kube.ok("create", "namespace", NS)
        v1alpha3, v1 = bookinfo_v1alpha3(), bookinfo_v1()
        runner.check("bookinfo v1alpha3 Gateway/VirtualService/DestinationRule accepted",
                     lambda: apply_valid(kube, v1alpha3))
        runner.check("bookinfo v1/v1beta1 objects (and ServiceEntries) with every modelled "
                     "field accepted",
                     lambda: apply_valid(kube, v1))
        runner.check("objects read back unchanged at v1, v1beta1 and v1alpha3",
                     lambda: check_round_trip(kube, v1alpha3 + v1))
        runner.check("printer columns (vs: Gateways, Hosts, Age; dr: Host, Age; se: Hosts, "
                     "Location, Resolution, Age; gw: Age)",
                     lambda: check_printer_columns(kube))
        runner.check("short names gw/vs/dr/se and categories istio-io, networking-istio-io",
                     lambda: check_names_and_categories(kube, v1alpha3 + v1))
        runner.check("status subresource", lambda: check_status_subresource(kube))
        for name, o, needles in invalid_cases():
            runner.check(f"rejected: {name}",
                         lambda o=o, name=name, needles=needles: check_invalid(kube, name, o, needles))
        runner.check("examples/ Istio configs accepted", lambda: check_examples(kube, work))
        runner.check("RBAC enforced; service-account tokens work",
                     lambda: check_rbac_and_tokens(kube, env_dir))
        expected = {f"{o['kind'].lower()}.{GROUP}/{o['metadata']['name']}" for o in v1alpha3 + v1}
        runner.check("objects survive API server and etcd restarts",
                     lambda: check_restart(env, kube, env_dir, expected))
    except Failure as e:
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
            print(f"environment directory kept: {env_dir} (logs in {env_dir}/logs)")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{runner.passed} passed, {runner.failed} failed")
    return 1 if runner.failed else 0


if __name__ == "__main__":
    sys.exit(main())
