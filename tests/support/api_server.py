"""The real FastAPI app under uvicorn, in a thread, on a free loopback port."""

from __future__ import annotations

import threading
import time

import uvicorn

from outreach.api.server import uvicorn_config
from outreach.core.settings import Settings
from tests.support.smtp import free_port


class ApiServer:
    """The real FastAPI app under uvicorn, in a thread, on a free loopback port."""

    def __init__(self, settings: Settings | None = None) -> None:
        """`settings` give the server's connection limits (header and keep-alive timeouts),
        the defaults otherwise; everything else is read per request from the runtime."""
        from outreach.api.app import create_app

        self.port = free_port()
        config = uvicorn_config(create_app(), settings or Settings(), host="127.0.0.1",
                                port=self.port, log_level="warning")
        config.lifespan = "off"
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("API server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
