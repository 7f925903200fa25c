#!/usr/bin/env python3
"""The operator's pipeline on a real kube-apiserver + etcd (tests/kube/env.sh), driven with
the real kubectl, feeding a real skiff-proxy over xDS:

  the status echo: the leader's own status writes come back as watch events; they change
  nothing the translator reads, so they translate nothing (skiff_operator_translations_total
  and skiff_operator_config_applies_total count exactly the real changes), and a status
  someone else overwrote is put back without a translation either.

  endpoints alone: an EndpointSlice change and a Pod label change recompute only endpoints
  (skiff_operator_translations_total unchanged, skiff_operator_endpoint_translations_total
  one up), only endpoints are pushed (skiff_operator_xds_type_pushes_total), and the
  gateway serves through the change without a failed request.

Prints 'N passed, N failed'; exits non-zero on failure."""
import argparse
import json
import os
import re
import sys
import threading
import traceback
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, HERE)
import operator_test as ot  # noqa: E402  (Kube, KubeOperator, the workloads and Istio YAML)
import proxy_test as pt  # noqa: E402
import xds_test as xt  # noqa: E402
from proxy_test import check  # noqa: E402

ARGS = None
NS = "shop"


def observed_generation(kube, name):
    """The observedGeneration of the Accepted=True condition of VirtualService `name`."""
    for c in ot.conditions(kube, NS, "virtualservice", name):
        if c["type"] == "Accepted" and c["status"] == "True":
            return c.get("observedGeneration")
    return None


def generation(kube, name):
    r = kube.kubectl("get", "virtualservice", name, "-n", NS, "-o", "json")
    return json.loads(r.stdout)["metadata"]["generation"]


def counters(op):
    return (op.metric("skiff_operator_translations_total"),
            op.metric("skiff_operator_config_applies_total"))


def status_echo(kube, op, gw):
    """N edits of one VirtualService, each waited for until the proxy serves it and the
    leader has written its status (observedGeneration of the edit). Each status write comes
    back as a watch event on the same watch before the next edit's event, so with the echo
    every edit after the first costs two translations; without it, exactly one."""
    before = counters(op)
    writes = op.metric("skiff_operator_status_writes_total")
    edits = 3
    for i in range(1, edits + 1):
        prefix = f"/echo{i}"
        kube.apply(ot.istio(NS, v1_prefix=prefix))
        served = ot.wait_until(lambda: ot.who(gw.port, prefix + "/x") == "catalog-v1", 30)
        gen = generation(kube, "catalog")
        written = ot.wait_until(lambda: observed_generation(kube, "catalog") == gen, 30)
        check(f"status echo: edit {i} is served and its status written (generation {gen})",
              served and written, (ot.who(gw.port, prefix + "/x"),
                                   ot.conditions(kube, NS, "virtualservice", "catalog")))
    after = counters(op)
    check("status echo: the leader wrote the statuses",
          op.metric("skiff_operator_status_writes_total") - writes >= edits,
          (writes, op.metric("skiff_operator_status_writes_total")))
    check(f"status echo: {edits} edits, {edits} translations (the status writes translate "
          f"nothing)", after[0] - before[0] == edits, (before, after))
    check(f"status echo: {edits} edits, {edits} input sets applied",
          after[1] - before[1] == edits, (before, after))


def status_overwritten(kube, op, gw):
    """Someone else overwrites the status: the leader puts it back (a status write), and
    neither the overwrite nor the write translates anything. An edit afterwards is the
    barrier: its event comes after both on the same watch."""
    before = counters(op)
    writes = op.metric("skiff_operator_status_writes_total")
    kube.kubectl("patch", "virtualservice", "catalog", "-n", NS, "--subresource=status",
                 "--type=merge", "-p", json.dumps({"status": {"conditions": [
                     {"type": "Accepted", "status": "False", "reason": "Overwritten",
                      "message": "not by skiff", "lastTransitionTime": "2020-01-01T00:00:00Z"}
                 ]}}))
    gen = generation(kube, "catalog")
    restored = ot.wait_until(lambda: observed_generation(kube, "catalog") == gen, 30)
    check("status echo: a status overwritten by someone else is put back by the leader",
          restored and op.metric("skiff_operator_status_writes_total") > writes,
          ot.conditions(kube, NS, "virtualservice", "catalog"))
    kube.apply(ot.istio(NS, v1_prefix="/barrier"))
    served = ot.wait_until(lambda: ot.who(gw.port, "/barrier/x") == "catalog-v1", 30)
    after = counters(op)
    check("status echo: an overwritten status and its repair translate nothing (1 edit, "
          "1 translation)", served and after[0] - before[0] == 1 and after[1] - before[1] == 1,
          (before, after))


def type_pushes(op):
    body = urllib.request.urlopen(f"http://127.0.0.1:{op.metrics}/metrics", timeout=5).read()
    return {m.group(1): int(m.group(2)) for m in re.finditer(
        r'^skiff_operator_xds_type_pushes_total\{type="(\w+)"\} (\d+)$', body.decode(), re.M)}


class Traffic:
    """Requests to the gateway in a loop on a thread, counting the answers by upstream."""

    def __init__(self, port, path):
        self.port, self.path = port, path
        self.answers = {}
        self.failures = []
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop:
            got = ot.who(self.port, self.path)
            if isinstance(got, str):
                self.answers[got] = self.answers.get(got, 0) + 1
            else:
                self.failures.append(got)

    def finish(self):
        self.stop = True
        self.thread.join(timeout=30)
        return self


def endpoints_alone(kube, op, gw, up):
    """An EndpointSlice edit, then a Pod label edit: new endpoints, no translation."""
    def measure(change, served, what):
        before = (counters(op), op.metric("skiff_operator_endpoint_translations_total"),
                  type_pushes(op))
        traffic = Traffic(gw.port, "/barrier/x")
        change()
        ok = ot.wait_until(served, 30)
        # Each change is one watch event, one store update and one endpoint update: the
        # pushes counted below belong to it once the proxy serves the new endpoints and the
        # push of that update has been counted.
        ot.wait_until(lambda: type_pushes(op).get("ClusterLoadAssignment", 0) >
                      before[2].get("ClusterLoadAssignment", 0), 20)
        traffic.finish()
        after = (counters(op), op.metric("skiff_operator_endpoint_translations_total"),
                 type_pushes(op))
        pushed = {t: after[2].get(t, 0) - before[2].get(t, 0) for t in after[2]}
        check(f"endpoints alone: {what} is served", ok, ot.who(gw.port, "/barrier/x"))
        check(f"endpoints alone: {what} translates no route (translations unchanged, one "
              f"endpoint update)",
              after[0][0] == before[0][0] and after[1] - before[1] == 1, (before, after))
        check(f"endpoints alone: {what} pushes only endpoints, once",
              pushed == {"Cluster": 0, "ClusterLoadAssignment": 1, "Listener": 0,
                         "RouteTable": 0, "Secret": 0}, pushed)
        check(f"endpoints alone: the gateway serves through {what} (no failed request)",
              not traffic.failures and sum(traffic.answers.values()) > 0,
              (traffic.failures[:5], traffic.answers))
        return traffic

    slice_v1 = [d for d in ot.workloads(NS, up["v1b"], up["v2"]).split("---\n")
                if "kind: EndpointSlice" in d and "name: catalog-v1\n" in d][0]
    measure(lambda: kube.apply(slice_v1),
            lambda: ot.who(gw.port, "/barrier/x") == "catalog-v1b", "an EndpointSlice edit")
    # The Pod behind the v2 slice joins subset v1 by its label.
    t = measure(lambda: kube.kubectl("label", "pod", "catalog-v2", "-n", NS, "version=v1",
                                     "--overwrite"),
                lambda: any(ot.who(gw.port, "/barrier/x") == "catalog-v2" for _ in range(20)),
                "a Pod label edit")
    check("endpoints alone: after the Pod label edit subset v1 has both Pods",
          set(t.answers) <= {"catalog-v1b", "catalog-v2"} and "catalog-v1b" in t.answers,
          t.answers)


def run(kube):
    up = {"v1": pt.start_upstream("catalog-v1"), "v2": pt.start_upstream("catalog-v2"),
          "v1b": pt.start_upstream("catalog-v1b")}
    kube.kubectl("apply", "-k", os.path.join(ROOT, "crds"))
    kube.wait_crds()
    kube.apply(ot.workloads(NS, up["v1"], up["v2"]))
    ot.set_pod_ready(kube, NS, "catalog-v1")
    ot.set_pod_ready(kube, NS, "catalog-v2")
    kube.apply(ot.istio(NS))
    op = ot.KubeOperator(["--kubeconfig", kube.kubeconfig])
    gw = xt.XdsProxy(op.port, "gw-pipeline", "--role", "gateway", *ot.MAP)
    ready = ot.wait_until(lambda: ot.who(gw.port, "/shop/items") == "catalog-v1", 30) and \
        ot.wait_until(lambda: observed_generation(kube, "catalog") == 1, 30)
    check("the gateway serves the VirtualService and its status is written", ready,
          op.logs()[-2000:])
    if not ready:
        return
    status_echo(kube, op, gw)
    status_overwritten(kube, op, gw)
    endpoints_alone(kube, op, gw, up)
    op.stop()


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ARGS = ap.parse_args()
    pt.ARGS = xt.ARGS = ot.ARGS = ARGS
    kube = None
    try:
        kube = ot.Kube()
        run(kube)
    except Exception:
        check("kube pipeline scenario", False, traceback.format_exc())
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
