"""Peak memory of a real `outreach serve` process taking rest-hook notifications over HTTP.

The server runs as a subprocess (uvicorn, the app's own thread pool and group commit) on a
throw-away database and a Redis database of its own (claimed as the tests claim theirs, emptied
after); 4 client threads PUT notifications, half of them bookings that start a journey. The
value is VmHWM (peak resident set) from /proc; the baseline is the same process's VmRSS once it
answers its first health check, before any notification."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import redis

from bench.result import Result
from connector.subscriptions import SECRET_HEADER
from tests.support.database import temporary_database
from tests.support.fhir_data import appointment
from tests.support.smtp import free_port

WORKERS = 4
SECRET = "bench-secret-0123456789"


def _claim_redis() -> tuple[redis.Redis, str] | None:
    for db in range(1, 16):
        client = redis.Redis(host="127.0.0.1", port=6379, db=db)
        if client.set("outreach-test:owner", os.getpid(), nx=True, ex=3600):
            return client, f"redis://127.0.0.1:6379/{db}"
    return None


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def _wait_up(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("outreach serve exited at start")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("outreach serve did not start")


def _notifications(count: int) -> list[dict[str, Any]]:
    start = datetime.now(UTC) + timedelta(days=5)
    return [appointment(f"Patient/m{i}", start, aid=f"m{i}",
                        status="booked" if i % 2 else "proposed", version="1",
                        updated=datetime.now(UTC)) for i in range(count)]


def run(count: int = 2000) -> list[Result]:
    claimed = _claim_redis()
    if claimed is None:
        return []
    broker, broker_url = claimed
    try:
        with temporary_database() as url:
            port = free_port()
            env = {**os.environ, "OUTREACH_DATABASE_URL": url, "OUTREACH_WEBHOOK_SECRET": SECRET,
                   "OUTREACH_BROKER_URL": broker_url}
            server = subprocess.Popen(
                [sys.executable, "-c", "from outreach.cli import app; app()", "serve",
                 "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
            try:
                base = f"http://127.0.0.1:{port}"
                _wait_up(base, server)
                idle_kb = _status_kb(server.pid, "VmRSS")
                items = _notifications(count)
                with httpx.Client(timeout=30, headers={
                        SECRET_HEADER: SECRET,
                        "Content-Type": "application/fhir+json"}) as client:
                    def put(resource: dict[str, Any]) -> int:
                        return client.put(f"{base}/fhir/notify/Appointment/{resource['id']}",
                                          content=json.dumps(resource)).status_code
                    began = time.perf_counter()
                    with ThreadPoolExecutor(WORKERS) as pool:
                        codes = list(pool.map(put, items))
                    rate = count / (time.perf_counter() - began)
                peak_kb = _status_kb(server.pid, "VmHWM")
            finally:
                server.terminate()
                server.wait(timeout=30)
    finally:
        broker.flushdb()
    ok = sum(code == 200 for code in codes)
    return [Result("serve_peak_rss_mb", peak_kb / 1024, "MB", idle_kb / 1024,
                   f"outreach serve after {count} rest-hook PUTs over HTTP ({ok} answered 200,"
                   f" half start a journey) at {rate:.0f}/s, {WORKERS} clients; baseline: its"
                   " RSS at start")]
