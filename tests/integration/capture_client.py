#!/usr/bin/env python3
"""A client with no proxy settings, for capture tests (standard library only, any uid).
  http URL [N] [HOST]     N GETs (default 1) on fresh connections (Host: HOST, default the
                          URL's); prints one JSON line per answer: {"status": ..., "body":
                          ...} or {"error": ...}
  tcp HOST PORT DATA      sends DATA (\\xNN escapes allowed), prints what comes back
"""
import json
import socket
import sys
import urllib.parse


def http_get(url, host=None):
    u = urllib.parse.urlsplit(url)
    port = u.port or 80
    s = socket.create_connection((u.hostname, port), timeout=10)
    try:
        path = (u.path or "/") + ("?" + u.query if u.query else "")
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host or u.netloc}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ")[1]) if head else 0
        headers = {}
        for line in head.decode("latin-1").split("\r\n")[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        return {"status": status, "headers": headers, "body": body.decode("latin-1")}
    finally:
        s.close()


def main():
    if sys.argv[1] == "http":
        n = int(sys.argv[3]) if len(sys.argv) > 3 else 1
        host = sys.argv[4] if len(sys.argv) > 4 else None
        for _ in range(n):
            try:
                print(json.dumps(http_get(sys.argv[2], host)), flush=True)
            except OSError as e:
                print(json.dumps({"error": str(e)}), flush=True)
        return
    host, port, data = sys.argv[2], int(sys.argv[3]), sys.argv[4].encode().decode("unicode_escape")
    try:
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(data.encode("latin-1"))
        got = b""
        while len(got) < len(data) + 3:
            d = s.recv(65536)
            if not d:
                break
            got += d
        s.close()
        print(json.dumps({"reply": got.decode("latin-1")}))
    except OSError as e:
        print(json.dumps({"error": str(e)}))


if __name__ == "__main__":
    main()
