#!/usr/bin/env python3
"""A plain HTTP/1.1 client for the mesh tests (standard library only, any uid, no proxy
settings: it connects to the address in the URL).
  get URL N [HEADER:VALUE ...]   N GETs on fresh connections; one JSON line per answer:
                                 {"status", "headers", "body"} or {"error"}
  post URL BODY [HEADER:VALUE ...]
"""
import json
import socket
import sys
import urllib.parse


def request(method, url, headers, body=b""):
    u = urllib.parse.urlsplit(url)
    s = socket.create_connection((u.hostname, u.port or 80), timeout=20)
    try:
        path = (u.path or "/") + ("?" + u.query if u.query else "")
        head = f"{method} {path} HTTP/1.1\r\nHost: {u.netloc}\r\nConnection: close\r\n"
        for h in headers:
            k, v = h.split(":", 1)
            head += f"{k}: {v}\r\n"
        if body or method == "POST":
            head += f"Content-Length: {len(body)}\r\nContent-Type: application/json\r\n"
        s.sendall(head.encode() + b"\r\n" + body)
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1]) if lines and lines[0] else 0
        hdrs = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                hdrs[k.strip().lower()] = v.strip()
        if hdrs.get("transfer-encoding", "").lower() == "chunked":
            out = b""
            while rest:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    break
                out += rest[:size]
                rest = rest[size + 2:]
            rest = out
        return {"status": status, "headers": hdrs, "body": rest.decode("latin-1")}
    finally:
        s.close()


def main():
    mode, url = sys.argv[1], sys.argv[2]
    if mode == "get":
        n = int(sys.argv[3])
        for _ in range(n):
            try:
                print(json.dumps(request("GET", url, sys.argv[4:])), flush=True)
            except OSError as e:
                print(json.dumps({"error": str(e)}), flush=True)
    else:
        try:
            print(json.dumps(request("POST", url, sys.argv[4:], sys.argv[3].encode())))
        except OSError as e:
            print(json.dumps({"error": str(e)}))


if __name__ == "__main__":
    main()
