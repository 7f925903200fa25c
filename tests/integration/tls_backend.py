#!/usr/bin/env python3
"""An HTTPS/1.1 test backend: answers every request with JSON naming itself, the SNI it was
asked for, the client certificate's subject (when one was sent) and the request head.
Usage: tls_backend.py PORT NAME CERT KEY [CLIENT_CA]   (prints "ready" once listening)
With CLIENT_CA, a client certificate signed by it is required."""
import json
import socket
import ssl
import sys
import threading


def serve(conn, name):
    try:
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                d = conn.recv(65536)
                if not d:
                    return
                buf += d
            head, buf = buf.split(b"\r\n\r\n", 1)
            cert = conn.getpeercert()
            subject = ""
            if cert:
                subject = ",".join("=".join(x) for rdn in cert.get("subject", ()) for x in rdn)
            body = json.dumps({"server": name, "sni": getattr(conn, "sni", ""),
                               "client_subject": subject,
                               "head": head.decode("latin-1")}).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(body), body))
    except (OSError, ssl.SSLError):
        pass
    finally:
        conn.close()


def main():
    port, name, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if len(sys.argv) > 5:
        ctx.load_verify_locations(sys.argv[5])
        ctx.verify_mode = ssl.CERT_REQUIRED

    def sni_cb(sock, server_name, _ctx):
        sock.sni = server_name or ""
    ctx.sni_callback = sni_cb
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(128)
    print("ready", flush=True)
    while True:
        raw, _ = srv.accept()
        def handshake(raw=raw):
            try:
                raw.settimeout(10)
                conn = ctx.wrap_socket(raw, server_side=True)
                serve(conn, name)
            except (OSError, ssl.SSLError):
                raw.close()
        threading.Thread(target=handshake, daemon=True).start()


if __name__ == "__main__":
    main()
