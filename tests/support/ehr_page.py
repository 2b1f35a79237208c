"""An "EHR" page that embeds a SMART app in an iframe, served from `localhost` while the app is
on `127.0.0.1`: two sites, so the browser treats the frame as cross-site (its cookies are
third-party), as a real EHR's embedded app is."""

from __future__ import annotations

import html
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *_args: object) -> None:
        pass

    def do_GET(self) -> None:
        page = (f'<!doctype html><title>EHR chart</title><body style="margin:0">'
                f'<div style="padding:8px;background:#234;color:#fff">EHR · patient chart</div>'
                f'<iframe id="app" src="{html.escape(self.server.app_url)}" '
                f'style="width:400px;height:860px;border:0"></iframe></body>').encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    app_url = ""


class EhrPage:
    """`with EhrPage(app_url) as ehr:` then open `ehr.url` (http://localhost:PORT/)."""

    def __init__(self, app_url: str) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.app_url = app_url
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://localhost:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"{self.origin}/chart"

    def __enter__(self) -> EhrPage:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
