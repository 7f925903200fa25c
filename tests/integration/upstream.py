#!/usr/bin/env python3
"""A small HTTP/1.1 test upstream (asyncio, keep-alive, chunked). It answers every request
with a JSON body describing what it received, so tests can see what the proxy forwarded.

Special paths:
  /status/NNN        answer with status NNN (no body for 204/304/HEAD)
  /chunked           answer with a chunked body of three chunks
  /bytes/N           answer with N bytes (streamed in 64 KiB writes)
  /close             answer and close the connection (Connection: close)
  /hop               answer with hop-by-hop headers that the proxy must strip
  /chance/NNN/P      answer with status NNN with probability P percent, else 200
  /delay/MS          answer after MS milliseconds
  /reset             close the connection without answering
  /count             JSON {"requests": n, "hosts": {host: n}}: requests seen (not counting
                     /count and /control); mirrors show up with their -shadow host
  /control/fail/NNN  from now on answer every request with NNN; /control/ok undoes it
Request bodies are read (Content-Length or chunked) and only their size and a checksum are
reported, so a 100 MB upload does not grow this process either.

Usage: upstream.py PORT NAME   (prints "ready" once listening)
"""
import asyncio
import hashlib
import json
import random
import sys

STATE = {"requests": 0, "hosts": {}, "fail": 0}


async def read_body(reader, headers):
    size = 0
    digest = hashlib.sha256()
    te = headers.get("transfer-encoding", "").lower()
    if te == "chunked":
        while True:
            line = await reader.readline()
            n = int(line.split(b";")[0].strip(), 16)
            if n == 0:
                while (await reader.readline()) not in (b"\r\n", b""):
                    pass
                break
            remaining = n
            while remaining:
                chunk = await reader.read(min(remaining, 65536))
                if not chunk:
                    raise ConnectionError("eof in chunk")
                digest.update(chunk)
                size += len(chunk)
                remaining -= len(chunk)
            await reader.readexactly(2)
    elif "content-length" in headers:
        remaining = int(headers["content-length"])
        while remaining:
            chunk = await reader.read(min(remaining, 65536))
            if not chunk:
                raise ConnectionError("eof in body")
            digest.update(chunk)
            size += len(chunk)
            remaining -= len(chunk)
    return size, digest.hexdigest()


async def handle(reader, writer, name):
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            method, target, version = line.decode("latin-1").strip().split(" ", 2)
            headers = {}
            raw_headers = []
            while True:
                h = await reader.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                k, v = h.decode("latin-1").split(":", 1)
                headers[k.strip().lower()] = v.strip()
                raw_headers.append([k.strip().lower(), v.strip()])
            size, digest = await read_body(reader, headers)
            path = target.split("?")[0]
            if path == "/count":
                body = json.dumps({"requests": STATE["requests"], "hosts": STATE["hosts"]})
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" %
                             (len(body), body.encode()))
                await writer.drain()
                continue
            if path.startswith("/control/"):
                STATE["fail"] = int(path.split("/")[3]) if path.startswith("/control/fail/") else 0
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
                continue
            STATE["requests"] += 1
            host = headers.get("host", "")
            STATE["hosts"][host] = STATE["hosts"].get(host, 0) + 1
            # /status, /chance, /delay and /reset also work after a route prefix
            # ("/r3/chance/500/50"), so tests need no rewrites.
            if path.endswith("/reset"):
                break
            if "/delay/" in path:
                await asyncio.sleep(int(path.split("/delay/")[1].split("/")[0]) / 1000.0)
            info = {"upstream": name, "method": method, "target": target, "version": version,
                    "headers": raw_headers, "body_bytes": size, "body_sha256": digest}
            body = (json.dumps(info) + "\n").encode()
            status = 200
            extra = ""
            close = headers.get("connection", "").lower() == "close"
            if "/status/" in path:
                status = int(path.split("/status/")[1].split("/")[0])
            if "/chance/" in path:
                parts = path.split("/chance/")[1].split("/")
                if random.random() * 100 < float(parts[1]):
                    status = int(parts[0])
            if STATE["fail"]:
                status = STATE["fail"]
            if path == "/close":
                close = True
            if path == "/hop":
                extra = "keep-alive: timeout=5\r\nx-hop: yes\r\nconnection: x-hop\r\n"
            if path == "/chunked":
                writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n"
                             b"x-upstream: " + name.encode() + b"\r\n\r\n")
                for part in (b"one,", b"two,", b"three"):
                    writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                continue
            if path.startswith("/bytes/"):
                n = int(path.split("/")[2])
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % n)
                block = b"x" * 65536
                while n > 0:
                    writer.write(block[:min(n, 65536)])
                    n -= min(n, 65536)
                    await writer.drain()
                continue
            no_body = status in (204, 304) or method == "HEAD"
            head = f"HTTP/1.1 {status} X\r\nx-upstream: {name}\r\nserver: upstream\r\n{extra}"
            if status not in (204, 304):
                head += f"content-length: {len(body)}\r\ncontent-type: application/json\r\n"
            if close:
                head += "connection: close\r\n"
            writer.write(head.encode() + b"\r\n" + (b"" if no_body else body))
            await writer.drain()
            if close:
                break
    except (ConnectionError, ValueError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def main():
    port = int(sys.argv[1])
    name = sys.argv[2]
    server = await asyncio.start_server(lambda r, w: handle(r, w, name), "127.0.0.1", port,
                                        backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
