#!/usr/bin/env python3
"""Resilience policies of skiff-proxy with real processes: retries, timeouts, fault
injection, mirroring, outlier detection and connection-pool limits.

Assertions about random behaviour use fixed request counts and binomial bounds (mean +/- 5
standard deviations), never timing thresholds. Prints 'N passed, N failed'."""
import argparse
import http.client
import json
import math
import os
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import proxy_test as pt  # noqa: E402  (shared helpers: Proxy, upstreams, snapshots)
from proxy_test import check, route, snapshot, to  # noqa: E402


def within(count, n, p, sigmas=5.0):
    """Is `count` successes of `n` draws consistent with probability p?"""
    mean = n * p
    sd = math.sqrt(n * p * (1 - p))
    lo, hi = mean - sigmas * sd, mean + sigmas * sd
    return lo <= count <= hi, f"{count}/{n}, expected {mean:.1f} in [{lo:.1f}, {hi:.1f}]"


def run_requests(port, path, n, threads=8, host="example.com", method="GET", body=None,
                 headers=None, timeout=30):
    """Sends n requests over `threads` keep-alive connections; returns a list of
    (status, headers dict, body bytes) in completion order."""
    results = []
    lock = threading.Lock()
    counter = {"left": n}
    deadline = time.time() + 120

    def worker():
        conn = None
        while time.time() < deadline:
            with lock:
                if counter["left"] == 0:
                    break
                counter["left"] -= 1
            for _ in range(3):
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
                    h = {"Host": host, **(headers or {})}
                    conn.request(method, path, body=body, headers=h)
                    r = conn.getresponse()
                    data = r.read()
                    hd = {k.lower(): v for k, v in r.getheaders()}
                    with lock:
                        results.append((r.status, hd, data))
                    if hd.get("connection", "").lower() == "close":
                        conn.close()
                        conn = None
                    break
                except (OSError, http.client.HTTPException) as e:
                    if conn is not None:
                        conn.close()
                    conn = None
                    last = e
            else:
                with lock:
                    results.append((0, {}, repr(last).encode()))
        if conn is not None:
            conn.close()

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return results


def admin_stats(p):
    return p.stats()


def cstat(stats, cluster, name):
    return stats.get(f"cluster.{pt.cluster_name(cluster)}.{name}", 0)


def upstream_count(port):
    s, h, b = pt.http_get(port, "/count")
    return json.loads(b)


def retry_policy(num, on=("5xx",), per_try=None, codes=()):
    rp = {"numRetries": num, "retryOn": list(on)}
    if per_try:
        rp["perTryTimeout"] = per_try
    if codes:
        rp["retriableStatusCodes"] = list(codes)
    return rp


# ---------------------------------------------------------------------------------------

def t_retries(up):
    snap = snapshot({("*",): [
        route([to("a")], match={"uri": {"prefix": "/r3"}}, name="r3",
              **{"route": {"clusters": [to("a")], "retryPolicy": retry_policy(3)}}),
        route([to("a")], match={"uri": {"prefix": "/r10"}},
              **{"route": {"clusters": [to("a")], "retryPolicy": retry_policy(10)}}),
        route([to("a")], match={"uri": {"prefix": "/off"}},
              **{"route": {"clusters": [to("a")]}}),
    ]}, {"a": [up["a"]]})
    p = pt.Proxy(snap)
    try:
        # Chaos 50% with attempts 3: a request fails only if all 4 tries fail (6.25%).
        n = 1200
        res = run_requests(p.port, "/r3/chance/500/50", n)
        fails = sum(1 for s, _, _ in res if s != 200)
        ok, detail = within(fails, n, 0.5 ** 4)
        check("chaos 50%, attempts 3: failure rate consistent with 0.5^4 = 6.25%", ok, detail)
        check("chaos 50%, attempts 3: the failures are catalog's own 500s",
              all(s == 500 and h.get("x-upstream") == "a" for s, h, _ in res if s != 200),
              [r[:2] for r in res if r[0] != 200][:3])
        st = admin_stats(p)
        check("retries are counted (upstream_rq_retry)", cstat(st, "a", "upstream_rq_retry") >= n / 2,
              cstat(st, "a", "upstream_rq_retry"))

        # Attempts 10: failure needs 11 failed tries in a row (0.049%): >= 99.9% success.
        n = 10000
        res = run_requests(p.port, "/r10/chance/500/50", n, threads=16)
        fails = sum(1 for s, _, _ in res if s != 200)
        check("chaos 50%, attempts 10: >= 99.9% success", len(res) == n and fails <= n // 1000,
              f"{fails} failed of {len(res)}")

        # Chaos 100%: every request fails, with the upstream's own response passed through.
        before = cstat(admin_stats(p), "a", "upstream_rq_retry_limit_exceeded")
        res = run_requests(p.port, "/r3/chance/500/100", 50)
        check("chaos 100%: every request gets the upstream's 500",
              all(s == 500 and h.get("x-upstream") == "a" and b'"upstream": "a"' in b
                  for s, h, b in res) and len(res) == 50, res[:2])
        st = admin_stats(p)
        check("chaos 100%: retries exhausted are counted (URX)",
              cstat(st, "a", "upstream_rq_retry_limit_exceeded") - before == 50,
              cstat(st, "a", "upstream_rq_retry_limit_exceeded"))

        # Retries off: the raw 50%.
        n = 1200
        res = run_requests(p.port, "/off/chance/500/50", n)
        fails = sum(1 for s, _, _ in res if s != 200)
        ok, detail = within(fails, n, 0.5)
        check("retries off: failure rate consistent with 50%", ok, detail)
    finally:
        p.stop()


def t_retry_conditions(up):
    dead = pt.free_port()
    snap = snapshot({("*",): [
        route([to("a")], match={"uri": {"prefix": "/gw"}},
              **{"route": {"clusters": [to("a")], "retryPolicy": retry_policy(2, ("gateway-error",))}}),
        route([to("a")], match={"uri": {"prefix": "/codes"}},
              **{"route": {"clusters": [to("a")], "retryPolicy": retry_policy(
                  2, ("retriable-status-codes",), codes=(418,))}}),
        route([to("a")], match={"uri": {"prefix": "/4xx"}},
              **{"route": {"clusters": [to("a")], "retryPolicy": retry_policy(2, ("retriable-4xx",))}}),
        route([to("a")], match={"uri": {"prefix": "/reset"}},
              **{"route": {"clusters": [to("a")], "retryPolicy": retry_policy(2, ("reset",))}}),
        route([to("mixed")], match={"uri": {"prefix": "/mixed"}},
              **{"route": {"clusters": [to("mixed")], "retryPolicy": retry_policy(
                  2, ("connect-failure",))}}),
        route([to("dead")], match={"uri": {"prefix": "/dead"}},
              **{"route": {"clusters": [to("dead")], "retryPolicy": retry_policy(
                  2, ("connect-failure",))}}),
    ]}, {"a": [up["a"]], "mixed": [dead, up["b"]], "dead": [dead]})
    p = pt.Proxy(snap, concurrency=1)
    try:
        def retries_after(path, expect_status):
            before = cstat(admin_stats(p), "a", "upstream_rq_retry")
            s, h, b = pt.http_get(p.port, path)
            return s == expect_status, cstat(admin_stats(p), "a", "upstream_rq_retry") - before

        ok, n = retries_after("/gw/status/500", 500)
        check("gateway-error does not retry a 500", ok and n == 0, n)
        ok, n = retries_after("/gw/status/503", 503)
        check("gateway-error retries a 503 (2 retries)", ok and n == 2, n)
        ok, n = retries_after("/codes/status/418", 418)
        check("retriable-status-codes retries a listed code", ok and n == 2, n)
        ok, n = retries_after("/codes/status/503", 503)
        check("retriable-status-codes ignores other codes", ok and n == 0, n)
        ok, n = retries_after("/4xx/status/409", 409)
        check("retriable-4xx retries a 409", ok and n == 2, n)
        ok, n = retries_after("/reset/reset", 503)
        check("reset retries a connection closed before the response, then 503", ok and n == 2, n)
        # connect-failure: the retry prefers the other endpoint, so every request succeeds.
        res = run_requests(p.port, "/mixed/x", 40, threads=1)
        check("connect-failure retry reaches the live endpoint every time",
              all(s == 200 for s, _, _ in res), [r[0] for r in res])
        s, h, b = pt.http_get(p.port, "/dead/x")
        check("connect failure with retries exhausted: 503 UF", s == 503 and b"connect" in b, (s, b))
    finally:
        p.stop()


def t_retry_bodies(up):
    snap = snapshot({("*",): [
        route([to("a")], **{"route": {"clusters": [to("a")], "retryPolicy": retry_policy(5)}}),
    ]}, {"a": [up["a"]]})
    p = pt.Proxy(snap)
    try:
        body = bytes(range(256)) * 40  # 10 KiB
        import hashlib
        digest = hashlib.sha256(body).hexdigest()
        res = run_requests(p.port, "/chance/500/50", 200, method="POST", body=body)
        good = [json.loads(b) for s, _, b in res if s == 200]
        check("a retried POST replays its body intact",
              len(good) >= 180 and all(g["body_bytes"] == len(body) and g["body_sha256"] == digest
                                       for g in good), (len(good), good[:1]))
        before = cstat(admin_stats(p), "a", "upstream_rq_retry")
        big = b"x" * (300 * 1024)
        conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
        conn.request("POST", "/status/500", body=big, headers={"Host": "x"})
        r = conn.getresponse()
        r.read()
        conn.close()
        after = cstat(admin_stats(p), "a", "upstream_rq_retry")
        check("a body larger than the retry buffer is not retried", r.status == 500 and
              after == before, (r.status, before, after))
    finally:
        p.stop()


def t_timeouts(up):
    snap = snapshot({("*",): [
        route([to("a")], match={"uri": {"prefix": "/pertry"}},
              **{"route": {"clusters": [to("a")], "retryPolicy": retry_policy(2, per_try="0.2s")}}),
        route([to("a")], match={"uri": {"prefix": "/route"}},
              **{"route": {"clusters": [to("a")], "timeout": "0.3s",
                           "retryPolicy": retry_policy(5, per_try="0.2s")}}),
        route([to("a")], match={"uri": {"prefix": "/none"}},
              **{"route": {"clusters": [to("a")]}}),
    ]}, {"a": [up["a"]]})
    p = pt.Proxy(snap, concurrency=1)
    try:
        s, h, b = pt.http_get(p.port, "/pertry/delay/2000")
        st = admin_stats(p)
        check("per-try timeout on every try: 504 UT after 3 tries",
              s == 504 and b"upstream request timeout" in b and
              cstat(st, "a", "upstream_rq_per_try_timeout") == 3, (s, b, st))
        per_try_before = cstat(admin_stats(p), "a", "upstream_rq_per_try_timeout")
        s, h, b = pt.http_get(p.port, "/route/delay/2000")
        st = admin_stats(p)
        per_try = cstat(st, "a", "upstream_rq_per_try_timeout") - per_try_before
        # 0.3 s route timeout, 0.2 s per try: the second try is cut by the route timeout,
        # so at most 2 of the 6 allowed tries start.
        check("route timeout bounds all tries together: 504 UT",
              s == 504 and cstat(st, "a", "upstream_rq_timeout") == 1 and per_try <= 1,
              (s, b, per_try, cstat(st, "a", "upstream_rq_timeout")))
        s, h, b = pt.http_get(p.port, "/none/delay/1200")
        check("no timeout unless set: a slow answer arrives", s == 200, (s, b))
    finally:
        p.stop()


def t_faults(up):
    snap = snapshot({("*",): [
        route([to("a")], match={"uri": {"prefix": "/abort50"}},
              fault={"abort": {"httpStatus": 503, "percentage": 50}}),
        route([to("a")], match={"uri": {"prefix": "/abort"}},
              fault={"abort": {"httpStatus": 418, "percentage": 100}}),
        route([to("a")], match={"uri": {"prefix": "/delay"}},
              fault={"delay": {"fixedDelay": "0.4s", "percentage": 100}}),
        route([to("a")], match={"uri": {"prefix": "/nodelay"}},
              fault={"delay": {"fixedDelay": "5s", "percentage": 0}}),
    ]}, {"a": [up["a"]]})
    p = pt.Proxy(snap)
    try:
        n = 1200
        res = run_requests(p.port, "/abort50", n)
        aborted = sum(1 for s, _, b in res if s == 503 and b"fault filter abort" in b)
        ok, detail = within(aborted, n, 0.5)
        check("abort 50%: share of 503 within binomial bounds", ok, detail)
        check("abort 50%: the rest reached the upstream",
              all(s == 200 for s, _, b in res if b"fault filter abort" not in b))
        s, h, b = pt.http_get(p.port, "/abort")
        check("abort 100% with status 418", s == 418 and b == b"fault filter abort", (s, b))
        times = []
        for _ in range(5):
            start = time.time()
            s, h, b = pt.http_get(p.port, "/delay")
            times.append((s, time.time() - start))
        check("a delay fault holds each request for its delay",
              all(s == 200 and t >= 0.39 for s, t in times), times)
        s, h, b = pt.http_get(p.port, "/nodelay")
        st = admin_stats(p)
        check("a 0% delay never applies; faults are counted", s == 200 and
              st["fault_delays_injected"] == 5 and st["fault_aborts_injected"] == aborted + 1,
              (s, st.get("fault_delays_injected"), st.get("fault_aborts_injected"), aborted))
    finally:
        p.stop()


def t_mirror(up):
    a, b = pt.start_upstream("mirror-a"), pt.start_upstream("mirror-b")
    snap = snapshot({("*",): [
        route([to("v1")], match={"uri": {"prefix": "/half"}},
              **{"route": {"clusters": [to("v1")],
                           "mirrors": [{"cluster": pt.cluster_name("v2"), "percentage": 50}]}}),
        route([to("v1")], **{"route": {"clusters": [to("v1")],
                                       "mirrors": [{"cluster": pt.cluster_name("v2"),
                                                    "percentage": 100}]}}),
    ]}, {"v1": [a], "v2": [b]})
    p = pt.Proxy(snap)
    try:
        n = 100
        res = run_requests(p.port, "/items", n, host="catalog:8080", method="POST", body=b"hello")
        check("mirror: clients get v1's answers",
              all(s == 200 and h.get("x-upstream") == "mirror-a" for s, h, _ in res), res[:1])
        seen = {}
        for _ in range(100):
            seen = upstream_count(b)
            if seen["requests"] >= n:
                break
            time.sleep(0.05)
        check("mirror: v2 receives a copy of every request with the -shadow authority",
              seen.get("hosts", {}).get("catalog-shadow:8080") == n, seen)
        before = upstream_count(b)["requests"]
        m = 1000
        run_requests(p.port, "/half", m)
        time.sleep(0.5)
        got = 0
        for _ in range(100):
            got = upstream_count(b)["requests"] - before
            st = admin_stats(p)
            if got >= st["mirror_requests_total"] - n:
                break
            time.sleep(0.05)
        ok, detail = within(got, m, 0.5)
        check("mirror 50%: share of copies within binomial bounds", ok, detail)
    finally:
        p.stop()


def t_outlier_detection(up):
    bad, good = pt.start_upstream("bad"), pt.start_upstream("good")
    pt.http_get(bad, "/control/fail/500")
    snap = snapshot({("*",): [route([to("od")])]}, {"od": {"ports": [bad, good], "cluster": {
        "outlierDetection": {"consecutive5xxErrors": 3, "interval": "1s",
                             "baseEjectionTime": "3s", "maxEjectionPercent": 100}}}})
    p = pt.Proxy(snap, concurrency=1)
    try:
        res = run_requests(p.port, "/x", 60, threads=1)
        fails = sum(1 for s, _, _ in res if s != 200)
        st = admin_stats(p)
        check("outlier detection ejects the failing endpoint after 3 consecutive 5xx",
              fails == 3 and cstat(st, "od", "outlier_detection_ejections_enforced_total") == 1 and
              cstat(st, "od", "outlier_detection_ejections_active") == 1,
              (fails, {k: v for k, v in st.items() if "outlier" in k}))
        pt.http_get(bad, "/control/ok")
        before = upstream_count(bad)["requests"]
        time.sleep(3.3)
        res = run_requests(p.port, "/x", 20, threads=1)
        after = upstream_count(bad)["requests"]
        check("the endpoint is back after the base ejection time",
              all(s == 200 for s, _, _ in res) and after - before >= 5, (after - before,))
    finally:
        p.stop()


def t_pool_limits(up):
    snap = snapshot({("*",): [
        route([to("cb")], match={"uri": {"prefix": "/cb"}}),
        route([to("rq")], match={"uri": {"prefix": "/rq"}}),
    ]}, {"cb": {"ports": [up["a"]], "cluster": {"connectionPool": {
        "maxConnections": 1, "maxPendingRequests": 1}}},
        "rq": {"ports": [up["b"]], "cluster": {"connectionPool": {"maxRequests": 2}}}})
    p = pt.Proxy(snap, concurrency=2)
    try:
        res = run_requests(p.port, "/cb/delay/300", 12, threads=12)
        ok = [s for s, _, _ in res if s == 200]
        uo = [b for s, _, b in res if s == 503 and b"overflow" in b]
        st = admin_stats(p)
        check("pool overflow: beyond 1 connection + 1 pending, requests get 503 UO",
              len(ok) >= 2 and len(uo) >= 1 and len(ok) + len(uo) == 12 and
              cstat(st, "cb", "upstream_rq_pending_overflow") == len(uo),
              (len(ok), len(uo), [r[0] for r in res]))
        res = run_requests(p.port, "/cb/x", 20, threads=1)
        check("pool limits: sequential requests all pass", all(s == 200 for s, _, _ in res))
        res = run_requests(p.port, "/rq/delay/300", 8, threads=8)
        ok = sum(1 for s, _, _ in res if s == 200)
        uo = sum(1 for s, _, b in res if s == 503 and b"overflow" in b)
        check("max requests: beyond 2 in flight, 503 UO", ok >= 2 and uo >= 1 and ok + uo == 8,
              (ok, uo))
        st = admin_stats(p)
        check("pool gauges return to zero", cstat(st, "cb", "upstream_rq_pending_active") == 0 and
              cstat(st, "cb", "upstream_rq_active") == 0 and
              cstat(st, "rq", "upstream_rq_active") == 0, st)
    finally:
        p.stop()


def t_weights(up):
    snap = snapshot({("*",): [route([to("a", 90), to("b", 10)])]}, {"a": [up["a"]], "b": [up["b"]]})
    p = pt.Proxy(snap)
    try:
        n = 2000
        res = run_requests(p.port, "/x", n)
        to_b = sum(1 for s, h, _ in res if h.get("x-upstream") == "b")
        ok, detail = within(to_b, n, 0.1)
        check("90/10 weights: share of the 10% within binomial bounds", ok, detail)
    finally:
        p.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--only", default="")
    pt.ARGS = ap.parse_args()
    try:
        up = {"a": pt.start_upstream("a"), "b": pt.start_upstream("b")}
        for t in [t_retries, t_retry_conditions, t_retry_bodies, t_timeouts, t_faults, t_mirror,
                  t_outlier_detection, t_pool_limits, t_weights]:
            if pt.ARGS.only and pt.ARGS.only not in t.__name__:
                continue
            try:
                t(up)
            except Exception:
                check(t.__name__, False, traceback.format_exc())
    finally:
        for proc in pt.PROCS:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    print(f"{pt.RESULTS['passed']} passed, {pt.RESULTS['failed']} failed")
    sys.exit(1 if pt.RESULTS["failed"] else 0)


if __name__ == "__main__":
    main()
