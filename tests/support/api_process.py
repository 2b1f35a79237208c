"""A real `outreach serve` in its own process: another API replica, sharing only what replicas
share (the database, Redis), never this process's memory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from tests.support.smtp import free_port

ROOT = Path(__file__).resolve().parents[2]


class ApiProcess:
    """`env` holds the OUTREACH_* settings of the replica (database, secrets, public URL)."""

    def __init__(self, env: Mapping[str, str], log: Path) -> None:
        self.port = free_port()
        self._env = {**os.environ, **env}
        self._log = log
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [sys.executable, "-c", "from outreach.cli import app; app()", "serve",
                   "--host", "127.0.0.1", "--port", str(self.port)]
        with self._log.open("ab") as log:
            self._proc = subprocess.Popen(command, cwd=ROOT, env=self._env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"outreach serve exited: {self._log.read_text()[-2000:]}")
            try:
                httpx.get(f"{self.url}/healthz", timeout=1)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self._proc is not None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=10)
            self._proc = None

    def __enter__(self) -> ApiProcess:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
