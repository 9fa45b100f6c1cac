"""A local S3 server (moto's, on 127.0.0.1) that holds synthetic LIDC-IDRI series under IDC's keys, for the download tests.

The bucket and objects are public-read: idc-index runs s5cmd with
``--no-sign-request``, and moto refuses unsigned requests to a private bucket.
The server's WSGI app is wrapped in a :class:`Tap` that counts the GETs of each
object (to tell what a rerun fetched again) and can hold every GET after a
budget: a held request sends half its body and waits, so a test can kill the
download mid-transfer at a known point.
"""
from __future__ import annotations

import logging
import threading
from collections import Counter

from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

BUCKET = "idc-open-data"


class Tap:
    """WSGI middleware: counts object GETs, holds those past ``budget``, fails the keys in ``fail_once`` once (404)."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        self.gets: Counter = Counter()
        self.served: set[str] = set()  # keys sent in full while the budget held
        self.budget: int | None = None
        self.held = 0
        self.release = threading.Event()
        self.fail_once: set[str] = set()

    def reset(self) -> None:
        with self.lock:
            self.gets.clear()
            self.served.clear()
            self.held = 0

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if environ["REQUEST_METHOD"] != "GET" or not path.endswith(".dcm"):
            return self.app(environ, start_response)
        key = path.split(f"/{BUCKET}/", 1)[-1]
        with self.lock:
            self.gets[key] += 1
            if key in self.fail_once:
                self.fail_once.discard(key)
                fail = True
            else:
                fail = False
                hold = self.budget is not None and sum(self.gets.values()) > self.budget
                self.held += hold
        if fail:
            start_response("404 Not Found", [("Content-Type", "application/xml")])
            return [b"<Error><Code>NoSuchKey</Code><Message>test: fails once</Message></Error>"]
        if not hold:
            out = self.app(environ, start_response)
            with self.lock:
                self.served.add(key)
            return out
        body = b"".join(self.app(environ, start_response))

        def half_then_wait():
            yield body[: len(body) // 2]
            self.release.wait(120)

        return half_then_wait()


class S3Server(ThreadedMotoServer):
    """moto's threaded server on 127.0.0.1 (a free port), its app behind a :class:`Tap`."""

    def __init__(self):
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self.tap: Tap | None = None

    def _server_entry(self) -> None:
        self.tap = Tap(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(self._ip_address, self._port, self.tap, True, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()

    @property
    def url(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")

    def start(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        super().start()
        self.client().create_bucket(Bucket=BUCKET, ACL="public-read")

    def put(self, key: str, data: bytes) -> None:
        self.client().put_object(Bucket=BUCKET, Key=key, Body=data, ACL="public-read")

    def delete(self, key: str) -> None:
        self.client().delete_object(Bucket=BUCKET, Key=key)

    def stop(self) -> None:
        if self.tap is not None:
            self.tap.release.set()
        super().stop()
