"""Waiting for CustomResourceDefinitions to be Established.

`kubectl wait --for=condition=Established` fails at once, instead of waiting, when it
reads a CRD whose status has no conditions yet (its error: ".status.conditions accessor
error: <nil> is of the type <nil>"); the API server fills them in a moment after the
create. So the tests poll the CRDs themselves until every one says Established=True.
"""

import json
import time


def wait_established(get, names, timeout=90.0, interval=0.2):
    """Polls until every CRD in `names` is Established.

    `get(*args)` runs `kubectl get ...` and returns its stdout (raising on failure).
    Raises RuntimeError naming the CRDs that are not Established by the deadline.
    """
    deadline = time.monotonic() + timeout
    pending = list(names)
    last_error = ""
    while True:
        try:
            out = get("crd", *pending, "-o", "json")
            doc = json.loads(out)
            # (One name gives the object itself, several a List.)
            items = doc.get("items", []) if doc.get("kind") == "List" else [doc]
            ready = set()
            for crd in items:
                conds = (crd.get("status") or {}).get("conditions") or []
                if any(c.get("type") == "Established" and c.get("status") == "True"
                       for c in conds):
                    ready.add(crd["metadata"]["name"])
            pending = [n for n in pending if n not in ready]
            if not pending:
                return
        except Exception as e:  # noqa: BLE001 (not created yet, or a torn read: poll again)
            last_error = str(e)
        if time.monotonic() >= deadline:
            raise RuntimeError(f"CRDs not Established after {timeout:.0f}s: {', '.join(pending)}"
                               + (f" (last error: {last_error})" if last_error else ""))
        time.sleep(interval)


CRDS = ["gateways.networking.istio.io", "virtualservices.networking.istio.io",
        "destinationrules.networking.istio.io", "serviceentries.networking.istio.io"]
