"""The demo's uvicorn settings (issue 11, defects 14 and 16), on a real server on loopback.

* A connection that sends half a request and waits (slowloris) is closed within the configured
  ``request_timeout``, even when it keeps trickling bytes.
* ``X-Forwarded-For`` is believed only from the proxies the profile names: by default, rotating it
  does not reset the per-address limit.
"""

from __future__ import annotations

import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aiobligations.demo.server import REQUEST_TIMEOUT, server_settings
from aiobligations.errors import ConfigurationError
from aiobligations.keys import init_project


def start_demo(folder: Path, server_table: str) -> tuple[subprocess.Popen, str]:
    config = init_project(folder)
    config.write_text(config.read_text() + "\n[server]\n" + server_table + "\n")
    code = f"from pathlib import Path; from aiobligations.demo import run_demo; run_demo(config=Path({str(config)!r}), port=0)"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in process.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 20
    seen = []
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            line = None
        if line is None:
            process.kill()
            pytest.fail("the demo did not announce its address:\n" + "".join(seen))
        seen.append(line)
        if "transparency page:" in line:
            return process, line.split("transparency page: ")[1].strip().removesuffix("/ai/transparency")


@pytest.fixture
def demo(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    process, url = start_demo(tmp_path, request.param)
    try:
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stderr.close()


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host.strip("[]"), int(port)


def _closed_after(sock: socket.socket, limit: float) -> float | None:
    """Block until the server closes ``sock`` (recv gives b"" or a reset); the seconds it took, or None."""
    start = time.monotonic()
    sock.settimeout(limit)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - start


@pytest.mark.parametrize("demo", ["request_timeout = 2"], indirect=True)
def test_a_half_sent_request_is_closed_within_the_request_timeout(demo: str) -> None:
    opened = time.monotonic()
    with socket.create_connection(_address(demo), timeout=5) as sock:
        sock.sendall(b"GET /ai/transparency HTTP/1.1\r\nHost: loris\r\nX-A: ")
        assert _closed_after(sock, 10) is not None, "the server kept a half-sent request open for 10 s"
    assert time.monotonic() - opened < 2 + 3
    # A whole request on a fresh connection is still served.
    assert 200 == httpx.get(f"{demo}/ai/health", timeout=5).status_code


@pytest.mark.parametrize("demo", ["request_timeout = 2"], indirect=True)
def test_trickling_bytes_does_not_extend_the_deadline(demo: str) -> None:
    opened = time.monotonic()
    with socket.create_connection(_address(demo), timeout=5) as sock:
        sock.sendall(b"GET /ai/transparency HTTP/1.1\r\n")
        closed = None
        for _ in range(20):  # One header byte, then block up to 0.5 s for the close.
            try:
                sock.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                closed = 0.0
                break
            closed = _closed_after(sock, 0.5)
            if closed is not None:
                break
        assert closed is not None, "trickling one byte every half second kept the connection open for 10 s"
    assert time.monotonic() - opened < 2 + 3


@pytest.mark.parametrize("demo", [""], indirect=True)
def test_rotating_x_forwarded_for_does_not_reset_the_address_limit(demo: str) -> None:
    body = {"category": "general", "text": "Hello."}
    with httpx.Client(base_url=demo, timeout=10) as http:
        codes = [http.post("/ai/complaints", json=body, headers={
            "Authorization": f"Bearer key-{n}", "X-Forwarded-For": f"203.0.113.{n}"}).status_code
            for n in range(22)]
    assert [201] * 20 + [429, 429] == codes  # DEFAULT_ADDRESS_LIMIT: 20 at once, from 127.0.0.1.


@pytest.mark.parametrize("demo", ['forwarded_allow_ips = ["127.0.0.1"]'], indirect=True)
def test_a_configured_proxy_s_forwarded_for_names_the_client(demo: str) -> None:
    body = {"category": "general", "text": "Hello."}
    with httpx.Client(base_url=demo, timeout=10) as http:
        codes = [http.post("/ai/complaints", json=body, headers={
            "Authorization": f"Bearer key-{n}", "X-Forwarded-For": f"203.0.113.{n}"}).status_code
            for n in range(22)]
        same = [http.post("/ai/complaints", json=body, headers={
            "Authorization": f"Bearer other-{n}", "X-Forwarded-For": "198.51.100.7"}).status_code
            for n in range(21)]
    assert [201] * 22 == codes
    assert [201] * 20 + [429] == same


def test_server_settings_defaults_and_checks() -> None:
    settings = server_settings(None)
    assert settings["proxy_headers"] is False and settings["forwarded_allow_ips"] == ""
    assert settings["timeout_keep_alive"] == 5 and settings["h11_max_incomplete_event_size"] == 16 << 10
    assert settings["limit_concurrency"] == 1000 and REQUEST_TIMEOUT == 15.0
    assert server_settings({"forwarded_allow_ips": ["10.0.0.0/8", "::1"]})["forwarded_allow_ips"] == "10.0.0.0/8,::1"
    for bad in ({"forwarded_allow_ips": "10.0.0.1"}, {"forwarded_allow_ips": ["nowhere"]},
                {"request_timeout": 0}, {"request_timeout": True}, {"limit_concurrency": 0}, {"proxies": []}):
        with pytest.raises(ConfigurationError):
            server_settings(bad)
