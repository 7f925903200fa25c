#!/usr/bin/env python3
"""The validating admission webhook with a real kube-apiserver + etcd (tests/kube/env.sh)
and the real kubectl: the API server calls skiff-operator's /validate over TLS.

  the operator makes a CA and serving certificate, keeps them in a Secret and its leader
  writes the CA into the ValidatingWebhookConfiguration's caBundle; `kubectl apply` of an
  invalid VirtualService fails with the webhook's message (resource and field path), a
  valid one is admitted (warnings shown); a restart keeps the Secret's CA, a restart after
  the Secret is gone makes a new one and rotates the caBundle (and a caBundle changed by
  hand is put back); with the operator down, failurePolicy Fail refuses the apply clearly.

The webhook configuration of the test points at https://127.0.0.1:PORT/validate (the
manifests use the Service). Prints 'N passed, N failed'; exits non-zero on failure."""
import argparse
import base64
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, HERE)
import operator_test as ot  # noqa: E402
import proxy_test as pt  # noqa: E402
import xds_test as xt  # noqa: E402
from proxy_test import check  # noqa: E402

CONFIG = "skiff-test-validation"
SECRET = "skiff-webhook-certs"

BAD_VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: catalog, namespace: shop}
spec:
  hosts: [catalog]
  http:
  - route:
    - destination: {host: catalog}
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: "5xx,sometimes"}
"""
# (An invalid duration would be refused by the CRD's schema, as Istio's, before the
# webhook is asked: the retry condition is one only the webhook checks.)
GOOD_VS = BAD_VS.replace('retryOn: "5xx,sometimes"', "retryOn: 5xx")


def webhook_config(port):
    # The manifests' webhook (manifests/webhook.yaml), with a URL client config: the API
    # server here has no Services to route to.
    with open(os.path.join(ROOT, "manifests", "webhook.yaml")) as f:
        text = f.read()
    text = text.replace("name: skiff-validation", f"name: {CONFIG}")
    text = text.replace(
        "    service: {name: skiff-operator, namespace: skiff-system, path: /validate, port: 15017}",
        f"    url: https://127.0.0.1:{port}/validate")
    return text


def ca_bundle(kube):
    r = kube.kubectl("get", "validatingwebhookconfiguration", CONFIG, "-o", "json", check_rc=False)
    if r.returncode != 0:
        return None
    hooks = json.loads(r.stdout).get("webhooks", [])
    return hooks[0].get("clientConfig", {}).get("caBundle") if hooks else None


def secret_ca(kube):
    r = kube.kubectl("get", "secret", SECRET, "-n", "default", "-o", "json", check_rc=False)
    if r.returncode != 0:
        return None
    return json.loads(r.stdout).get("data", {}).get("ca.crt")


def tls_verifies(port, ca_pem):
    """Does the webhook on `port` present a certificate for 127.0.0.1 that `ca_pem` signed?"""
    ctx = ssl.create_default_context(cadata=ca_pem)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                body = b"{}"
                tls.sendall(b"POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
                            b"Connection: close\r\n\r\n" + body)
                return tls.recv(100).startswith(b"HTTP/1.1 200")
    except (OSError, ssl.SSLError):
        return False


def apply_file(kube, text):
    path = os.path.join(tempfile.mkdtemp(prefix="skiff-wh-"), "vs.yaml")
    with open(path, "w") as f:
        f.write(text)
    return kube.kubectl("apply", "-f", path, check_rc=False)


def run(kube):
    kube.kubectl("apply", "-k", os.path.join(ROOT, "crds"))
    kube.wait_crds()
    kube.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")
    port = pt.free_port()
    kube.apply(webhook_config(port))
    args = ["--kubeconfig", kube.kubeconfig, "--webhook-port", str(port),
            "--webhook-address", "127.0.0.1", "--webhook-config", CONFIG]
    op = ot.KubeOperator(args)
    check("the leader writes the CA of the certificates it keeps in a Secret into the caBundle",
          ot.wait_until(lambda: ca_bundle(kube) and ca_bundle(kube) == secret_ca(kube), 40),
          (ca_bundle(kube), secret_ca(kube), op.logs()[-2000:]))
    first_ca = ca_bundle(kube)

    r = apply_file(kube, BAD_VS)
    want = ('admission webhook "validation.skiff.dev" denied the request: VirtualService '
            'shop/catalog: spec.http[0].retries.retryOn: unknown retry condition "sometimes"')
    check("kubectl apply of an invalid VirtualService fails with the webhook's message",
          r.returncode != 0 and want in r.stderr, r.stdout + r.stderr)
    check("... and nothing is stored",
          kube.kubectl("get", "vs", "catalog", "-n", "shop", check_rc=False).returncode != 0)

    started = time.time()
    r = apply_file(kube, GOOD_VS)
    took = time.time() - started
    check("a valid VirtualService is admitted", r.returncode == 0 and "created" in r.stdout,
          r.stdout + r.stderr)
    print(f"     (kubectl apply of a valid VirtualService took {took * 1000:.0f} ms, "
          "including kubectl's own start)")
    # An update is checked too; warnings (a field skiff ignores) reach kubectl.
    r = kube.kubectl("apply", "-f", "-", check_rc=False,
                     input=GOOD_VS.replace("  hosts: [catalog]\n",
                                           "  hosts: [catalog]\n  exportTo: [\".\"]\n"
                                           ).replace("perTryTimeout: 2s",
                                                     "perTryTimeout: 2s, backoff: 10ms"))
    check("an update is admitted and the webhook's warnings are shown",
          r.returncode == 0 and "Warning: VirtualService shop/catalog: "
          "spec.http[0].retries.backoff: not supported by skiff yet" in r.stderr,
          r.stdout + r.stderr)
    r = apply_file(kube, GOOD_VS.replace("attempts: 3", "attempts: 0"))
    check("an update that is invalid is refused (attempts: 0 with perTryTimeout)",
          r.returncode != 0 and 'denied the request: VirtualService shop/catalog: spec.http[0].retries: '
          'attempts: 0 disables retries' in r.stderr, r.stderr)
    r = apply_file(kube, """apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: {name: gw, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [shop.example.com]
""")
    check("a Gateway (v1alpha3) is validated too: HTTPS without TLS settings is refused",
          r.returncode != 0 and "Gateway shop/gw: spec.servers[0].tls: an HTTPS server must have "
          "TLS settings" in r.stderr, r.stderr)
    se = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: partner, namespace: shop}
spec:
  hosts: [api.partner.example]
  ports: [{number: 443, name: https, protocol: TLS}]
  resolution: STATIC
  endpoints: [{address: partner.example}]
"""
    r = apply_file(kube, se)
    check("a ServiceEntry is validated too: a DNS name under resolution STATIC is refused",
          r.returncode != 0 and 'denied the request: ServiceEntry shop/partner: '
          'spec.endpoints[0].address: "partner.example" is not an IP address' in r.stderr,
          r.stderr)
    r = apply_file(kube, se.replace("resolution: STATIC", "resolution: DNS"))
    check("... and the same entry with resolution DNS is admitted",
          r.returncode == 0 and "created" in r.stdout, r.stdout + r.stderr)
    kube.kubectl("delete", "vs", "catalog", "-n", "shop")
    check("a delete is not refused", kube.kubectl("get", "vs", "-n", "shop", "-o", "name"
                                                  ).stdout.strip() == "")

    # A second replica serves with the same certificates (from the Secret) and, not being
    # the leader, leaves the caBundle alone.
    port2 = pt.free_port()
    op2 = ot.KubeOperator(["--kubeconfig", kube.kubeconfig, "--webhook-port", str(port2),
                           "--webhook-address", "127.0.0.1", "--webhook-config", CONFIG],
                          identity="op-2")
    ca_pem = base64.b64decode(secret_ca(kube)).decode()
    check("a second replica serves the webhook with the certificate from the same Secret",
          ot.wait_until(lambda: tls_verifies(port2, ca_pem), 40) and
          op2.metric("skiff_operator_leader") == 0 and ca_bundle(kube) == first_ca,
          op2.logs()[-1500:])
    op2.stop()

    # A restart keeps the Secret's CA; a caBundle changed by hand is put back.
    op.stop()
    op = ot.KubeOperator(args)
    check("a restarted operator keeps serving with the CA from its Secret",
          ot.wait_until(lambda: apply_file(kube, GOOD_VS).returncode == 0, 40) and
          ca_bundle(kube) == first_ca, op.logs()[-1500:])
    bogus = base64.b64encode(b"not a CA").decode()
    patch = json.dumps([{"op": "replace", "path": "/webhooks/0/clientConfig/caBundle",
                         "value": bogus}])
    kube.kubectl("patch", "validatingwebhookconfiguration", CONFIG, "--type=json", "-p", patch)
    check("a caBundle changed by hand is put back by the leader",
          ot.wait_until(lambda: ca_bundle(kube) == first_ca, 40), ca_bundle(kube))

    # Rotation: without its Secret, a restarted operator makes a new CA and rotates caBundle.
    op.stop()
    kube.kubectl("delete", "secret", SECRET, "-n", "default")
    op = ot.KubeOperator(args)
    check("after a restart without the Secret: a new CA, in the Secret and in caBundle",
          ot.wait_until(lambda: secret_ca(kube) and ca_bundle(kube) == secret_ca(kube) and
                        ca_bundle(kube) != first_ca, 40), op.logs()[-1500:])
    check("... and the API server trusts the new certificate",
          ot.wait_until(lambda: apply_file(kube, GOOD_VS.replace("attempts: 3", "attempts: 4")
                                           ).returncode == 0, 40))
    r = apply_file(kube, BAD_VS)
    check("... and the new webhook still refuses the invalid VirtualService",
          r.returncode != 0 and want in r.stderr, r.stderr)

    # The operator down: failurePolicy Fail refuses the write, saying why.
    op.stop()
    r = apply_file(kube, GOOD_VS.replace("attempts: 3", "attempts: 5"))
    check("with the operator down, apply fails clearly (failurePolicy Fail)",
          r.returncode != 0 and 'failed calling webhook "validation.skiff.dev"' in r.stderr and
          f"127.0.0.1:{port}" in r.stderr, r.stderr)


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
        check("webhook scenario", False, traceback.format_exc())
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
