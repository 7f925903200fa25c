#!/usr/bin/env python3
"""Small servers for capture tests (standard library only, any uid):
  http ADDR PORT NAME   HTTP/1.1 keep-alive; every answer is JSON with the server's name,
                        the peer address, the request line and headers. /status/NNN answers
                        NNN; /chance/NNN/P answers NNN with probability P percent.
  echo ADDR PORT [NAME] TCP: every chunk read is written back prefixed with "NAME:" ("echo:")
  dual ADDR PORT        HTTP if the first bytes are a request (answers {"proto": "http"}),
                        else TCP echo prefixed with "tcp:"
Prints "ready" once listening.
"""
import json
import random
import socket
import sys
import threading


def http_answer(conn, name, first=b""):
    buf = first
    while True:
        while b"\r\n\r\n" not in buf:
            d = conn.recv(65536)
            if not d:
                return
            buf += d
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        method, target = lines[0].split(" ")[:2]
        headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        while len(buf) < n:
            d = conn.recv(65536)
            if not d:
                return
            buf += d
        buf = buf[n:]
        status = 200
        if "/status/" in target:
            status = int(target.split("/status/")[1].split("/")[0])
        if "/chance/" in target:
            code, pct = target.split("/chance/")[1].split("/")[:2]
            if random.random() * 100 < float(pct.split("?")[0]):
                status = int(code)
        body = json.dumps({"server": name, "peer": conn.getpeername()[0], "method": method,
                           "target": target, "headers": headers}).encode()
        close = headers.get("connection", "").lower() == "close"
        conn.sendall(b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s"
                     % (status, len(body), b"connection: close\r\n" if close else b"", body))
        if close:
            return


def echo(conn, prefix, first=b""):
    if first:
        conn.sendall(prefix + first)
    while True:
        d = conn.recv(65536)
        if not d:
            return
        conn.sendall(prefix + d)


def serve(mode, conn, name):
    try:
        if mode == "http":
            http_answer(conn, name)
        elif mode == "echo":
            echo(conn, name.encode() + b":")
        else:
            first = conn.recv(65536)
            if first[:1].isupper() and b" " in first[:16]:
                http_answer(conn, "dual", first)
            else:
                echo(conn, b"tcp:", first)
    except OSError:
        pass
    finally:
        conn.close()


def main():
    mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    name = sys.argv[4] if len(sys.argv) > 4 else mode
    srv = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(128)
    print("ready", flush=True)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(mode, c, name), daemon=True).start()


if __name__ == "__main__":
    main()
