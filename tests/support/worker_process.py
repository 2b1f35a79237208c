"""A real `outreach worker` (Celery, prefork) in its own process group, killable with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class WorkerProcess:
    def __init__(self, env: Mapping[str, str], concurrency: int = 2,
                 queues: str | None = None) -> None:
        self._env = {**os.environ, **env}
        self._concurrency = concurrency
        self._queues = queues  # `outreach worker --queues`; None: all of them
        self._proc: subprocess.Popen[bytes] | None = None
        self.log = Path(self._env.get("OUTREACH_TEST_WORKER_LOG", "/tmp/outreach-worker.log"))

    def start(self) -> None:
        command = [sys.executable, "-c", "from outreach.cli import app; app()", "worker",
                   f"--concurrency={self._concurrency}"]
        if self._queues is not None:
            command.append(f"--queues={self._queues}")
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(command, cwd=ROOT, env=self._env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pids(self) -> list[int]:
        """The worker's main process and its pool children (for their memory, from /proc)."""
        if self._proc is None:
            return []
        group = self._proc.pid
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getpgid(int(entry.name)) == group:
                        found.append(int(entry.name))
                except OSError:
                    continue  # gone meanwhile
        return sorted(found)

    def kill(self) -> None:
        """SIGKILL the worker and its pool children at once: nothing gets to clean up."""
        if self._proc is not None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=10)
            self._proc = None

    def stop(self) -> None:
        if self._proc is not None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc = None

    def __enter__(self) -> WorkerProcess:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


class RedisProcess:
    """A private redis-server on its own port, so a test can stop and restart it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self._proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=10)
            self._proc = None
