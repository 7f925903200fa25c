#!/usr/bin/env python3
"""A scripted HTTP/1.1 upstream for hardening tests: it records every byte it receives on
every connection, counts requests by path, and misbehaves on purpose by path.

Paths (matched at the end of the path, so /any/prefix/drop works; the query is ignored):
  /drop      read the whole request, then close the connection without answering
  /hang      read the whole request, never answer (the connection stays open)
  /early     answer 200 as soon as the head arrived, before reading the body; then keep
             reading and discarding whatever comes on that connection
  /early-partial  the same, but only half of the response body is sent
  /cut-body  answer 200 with content-length 100 but only 9 bytes of body, then close
  /cut-chunked  answer 200 chunked with one chunk and no last chunk, then close
  /big       answer 200 with a 16 MiB body of "0123456789abcdef" repeated (keep-alive)
  /upgrade-bare, /upgrade-h2c  answer 101 without an Upgrade field, or with "h2c"
  /upgrade-bye  answer 101 (websocket) and "bye" in the tunnel, then close
  /upgrade   answer 101 Switching Protocols (websocket), whatever the request asked, then
             echo every byte back, prefixed "echo:"
  anything else: 200 with a JSON body {"path", "head", "body"} of what arrived (keep-alive)

Control (not counted): GET /_log answers JSON {"requests": {path: n}, "connections":
[base64 of all bytes received on each connection]}; GET /_reset clears both.

Usage: hostile_upstream.py PORT   (prints "ready" once listening)
"""
import base64
import json
import socket
import sys
import threading

LOCK = threading.Lock()
REQUESTS = {}
CONNECTIONS = []  # bytearrays, one per accepted connection
BIG_BYTES = 16 * 1024 * 1024


def count(path):
    with LOCK:
        REQUESTS[path] = REQUESTS.get(path, 0) + 1


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.record = bytearray()
        with LOCK:
            CONNECTIONS.append(self.record)

    def more(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        with LOCK:
            self.record.extend(data)
        self.buf += data

    def until(self, marker):
        while marker not in self.buf:
            if len(self.buf) > 1 << 20:
                raise EOFError
            self.more()
        head, self.buf = self.buf.split(marker, 1)
        return head

    def take(self, n):
        while len(self.buf) < n:
            self.more()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def body(self, headers):
        if headers.get("transfer-encoding", "").lower() == "chunked":
            out = b""
            trailers = b""
            while True:
                line = self.until(b"\r\n")
                n = int(line.split(b";")[0].strip(), 16)
                if n == 0:
                    while True:
                        t = self.until(b"\r\n")
                        if not t:
                            return out, trailers
                        trailers += t + b"\r\n"
                out += self.take(n)
                self.take(2)
        n = int(headers.get("content-length", "0"))
        return self.take(n), b""


def serve(sock):
    c = Conn(sock)
    try:
        while True:
            head = c.until(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target = lines[0].split(" ")[:2]
            path = target.split("?")[0]
            headers = {}
            for line in lines[1:]:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
            if path == "/_log":
                with LOCK:
                    body = json.dumps({
                        "requests": REQUESTS,
                        "connections": [base64.b64encode(bytes(r)).decode() for r in CONNECTIONS
                                        if not bytes(r).startswith(b"GET /_")]}).encode()
                sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                continue
            if path == "/_reset":
                with LOCK:
                    REQUESTS.clear()
                    CONNECTIONS[:] = [c.record]
                    c.record.clear()
                sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                continue
            count(path)
            if path.endswith("/early") or path.endswith("/early-partial"):
                if path.endswith("/early"):
                    sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nearly")
                else:
                    sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nearly")
                while True:
                    c.more()
            body, trailers = c.body(headers)
            if path.endswith("/drop"):
                return
            if path.endswith("/cut-body"):
                sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly-part")
                return
            if path.endswith("/cut-chunked"):
                sock.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                             b"5\r\nhello\r\n")
                return
            if path.endswith("/hang"):
                while True:
                    c.more()
            if path.endswith("/big"):
                big = b"0123456789abcdef" * (BIG_BYTES // 16)
                sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
                             b"content-length: %d\r\n\r\n%s" % (len(big), big))
                continue
            if path.endswith("/upgrade-h2c") or path.endswith("/upgrade-bare"):
                sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\n" +
                             (b"upgrade: h2c\r\n" if path.endswith("h2c") else b"") +
                             b"connection: upgrade\r\n\r\n")
                while True:
                    c.more()
            if path.endswith("/upgrade-bye"):
                sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
                             b"connection: upgrade\r\n\r\nbye")
                return
            if path.endswith("/upgrade"):
                sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
                             b"connection: upgrade\r\n\r\n")
                c.buf = b""
                while True:
                    c.buf = b""
                    c.more()
                    sock.sendall(b"echo:" + c.buf)
            info = json.dumps({"path": path, "head": head.decode("latin-1"),
                               "body": body.decode("latin-1"),
                               "trailers": trailers.decode("latin-1")}).encode()
            sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(info), info))
    except (EOFError, OSError, ValueError, IndexError):
        pass
    finally:
        try:
            sock.close()
        except OSError:
            pass


def main():
    port = int(sys.argv[1])
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(512)
    print("ready", flush=True)
    while True:
        s, _ = srv.accept()
        threading.Thread(target=serve, args=(s,), daemon=True).start()


if __name__ == "__main__":
    main()
