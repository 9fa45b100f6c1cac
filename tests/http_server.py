"""A local HTTP server (127.0.0.1) that serves one archive, for the tests of the slices download.

It honours ``Range: bytes=N-`` (206) unless told not to, can send slowly (so a test can
kill the client mid-transfer) or never answer (a time-out), and keeps every request's
Range header so that a test can tell what a rerun asked for.
"""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ArchiveServer:
    def __init__(self, payload: bytes, rate: float | None = None, hang: bool = False, ranges: bool = True):
        self.payload, self.rate, self.hang, self.ranges = payload, rate, hang, ranges
        self.requests: list[str | None] = []  # the Range header of each GET (None: none)
        self.sent = 0  # body bytes sent, all requests together
        self.stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802
                server.requests.append(self.headers.get("Range"))
                if server.hang:
                    server.stop.wait(60)
                    return
                start = 0
                rng = self.headers.get("Range")
                if server.ranges and rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    if start >= len(server.payload):
                        self.send_response(416)
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(server.payload) - 1}/{len(server.payload)}")
                else:
                    self.send_response(200)
                body = server.payload[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/zip")
                self.end_headers()
                step = 64 * 1024
                for i in range(0, len(body), step):
                    if server.stop.is_set():
                        return
                    try:
                        self.wfile.write(body[i:i + step])
                    except (BrokenPipeError, ConnectionResetError):
                        return
                    server.sent += len(body[i:i + step])
                    if server.rate:
                        time.sleep(step / server.rate)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/archive.zip"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
