"""The OTLP exporter (aiobligations.ledger.otlp): ledger records as OpenTelemetry log records.

Every test sends to a real OTLP/HTTP receiver on loopback (tests/_otlp_receiver.py) that decodes
the protobuf requests, and most run on both a SQLite and a PostgreSQL ledger. Nothing waits by
sleeping: tests wait on the receiver's condition variable, or poll a condition with a deadline.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from structlog.testing import capture_logs

from _otlp_receiver import Receiver
from aiobligations import Obligations
from aiobligations.cli import main
from aiobligations.errors import ConfigurationError, LedgerError, LedgerLocked, UnusableInput
from aiobligations.keys import init_project
from aiobligations.ledger import Ledger
from aiobligations.ledger import otlp
from aiobligations.ledger.otlp import ExportFailed, LedgerExporter, OTLPSettings, exporter_from_profile
from aiobligations.ledger.records import parse_ts
from aiobligations.ledger.store import SQLiteStore
from aiobligations.profile import load_profile

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def eventually(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        pause.wait(0.02)


def fill(ledger: Ledger, count: int, *, marker: int = 0) -> int:
    """Submit ``count`` records of several kinds and wait until they are durable; return the size."""
    for n in range(count):
        if n % 3 == 0:
            record = {"kind": "interaction", "interaction_id": f"i-{marker}-{n}", "trace_id": TRACE, "span_id": SPAN}
        elif n % 3 == 1:
            record = {"kind": "risk", "summary": f"seen {marker}-{n}"}
        else:
            record = {"kind": "log", "n": n}
        ledger.submit(record)
    size = ledger.flush(timeout=60)
    eventually(lambda: ledger.durable_size() >= size, "the records to be durable")
    return size


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # Loopback only, whatever the machine's proxy.
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_COMPRESSION", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_LOGS_HEADERS", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_HEADERS", raising=False)
    found = Receiver()
    yield found
    found.close()


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest) -> Ledger:
    """A ledger with a writer thread of its own (SQLite), or a replica of a PostgreSQL ledger."""
    if request.param == "sqlite":
        return request.getfixturevalue("make_ledger")()
    return request.getfixturevalue("make_replica")()


sqlite_only = pytest.mark.parametrize("ledger", ["sqlite"], indirect=True)


@pytest.fixture
def make_exporter(ledger: Ledger, receiver: Receiver) -> Iterator[Callable[..., LedgerExporter]]:
    """Exporters of ``ledger`` with test timings; each is closed before the ledger and the receiver are."""
    made: list[LedgerExporter] = []

    def make(endpoint: str, target: Any = None, **options: Any) -> LedgerExporter:
        options.setdefault("timeout", 2.0)
        options.setdefault("poll_interval", 0.05)
        options.setdefault("lock_interval", 0.1)
        exporter = LedgerExporter(ledger if target is None else target, endpoint, **options)
        made.append(exporter)
        return exporter

    yield make
    for exporter in made:
        exporter.close(timeout=5.0)


def leaf_hash(data: bytes) -> str:
    return hashlib.sha256(b"\x00" + data).hexdigest()


# -- what is sent ---------------------------------------------------------------------------------


def test_every_record_is_sent_once_in_order_with_its_attributes(
        ledger: Ledger, receiver: Receiver, make_exporter: Callable[..., LedgerExporter]) -> None:
    size = fill(ledger, 300)
    exporter = make_exporter(receiver.url, batch_size=128, service_name="Example Assistant")

    assert size == exporter.export_pending()

    assert list(range(size)) == receiver.indices()
    assert 3 == receiver.attempts  # 128 + 128 + 44.
    for record in receiver.records:
        data = ledger.leaf(record.index)
        assert data is not None
        fields = json.loads(data)
        assert data.decode() == record.body  # The exact stored bytes, as a string.
        assert fields["kind"] == record.attributes["aiobligations.kind"]
        assert ledger.origin == record.attributes["aiobligations.origin"]
        assert leaf_hash(data) == record.attributes["aiobligations.leaf_sha256"]
        assert round(parse_ts(fields["ts"]) * 1e6) * 1000 == record.time_unix_nano
        assert (9, "INFO") == (record.severity_number, record.severity_text)
        assert "Example Assistant" == record.resource["service.name"]
        assert "aiobligations.ledger" == record.scope
        if fields["kind"] == "interaction":
            assert fields["interaction_id"] == record.attributes["aiobligations.interaction_id"]
            assert TRACE == record.attributes["aiobligations.trace_id"]
            assert (bytes.fromhex(TRACE), bytes.fromhex(SPAN)) == (record.trace_id, record.span_id)
        else:
            assert "aiobligations.interaction_id" not in record.attributes
            assert (b"", b"") == (record.trace_id, record.span_id)
    assert size == exporter.cursor == exporter.exported

    assert 0 == exporter.export_pending()  # Nothing pending: no request at all.
    assert 3 == receiver.attempts


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_personal_data_stays_sealed(ledger: Ledger, receiver: Receiver, make_exporter: Callable[..., LedgerExporter],
                                    compression: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", compression)
    marker = f"MARKER-{os.urandom(6).hex()}"
    ledger.append({"kind": "interaction", "interaction_id": "i-1", "subject": f"alice-{marker}",
                   "personal": {"input": f"my secret is {marker}", "output": marker}})
    ledger.append({"kind": "log", "subject": f"bob-{marker}", "personal": marker})
    eventually(lambda: ledger.durable_size() >= 2, "the records to be durable")
    exporter = make_exporter(receiver.url)

    assert 2 == exporter.export_pending()

    assert all(headers.get("content-encoding", "none") == compression for headers in receiver.headers)
    for wire in (*receiver.bodies, *receiver.plain):
        assert marker.encode() not in wire  # Neither the subjects (alice-MARKER…) nor their words.
    for record in receiver.records:
        fields = json.loads(record.body)
        assert "personal" not in fields and fields["sealed"]
        assert record.body == ledger.leaf(record.index).decode()
    assert ledger.pseudonym(f"alice-{marker}") == json.loads(receiver.records[0].body)["subject"]


# -- never losing a record ------------------------------------------------------------------------------


@pytest.mark.parametrize("outage", ["unavailable", "refused"])
def test_nothing_is_lost_while_the_collector_is_down(
        ledger: Ledger, receiver: Receiver, make_exporter: Callable[..., LedgerExporter], outage: str) -> None:
    if outage == "refused":
        receiver.refuse()
    else:
        receiver.set_mode("unavailable")
    size = fill(ledger, 20)
    exporter = make_exporter(receiver.url, timeout=0.5).start()

    eventually(lambda: exporter.failures >= 2, "two failed attempts")
    assert 0 == exporter.cursor and [] == receiver.records
    assert 0 == exporter.exported

    if outage == "refused":
        receiver.listen()
    else:
        receiver.set_mode("ok")
    eventually(lambda: exporter.cursor == size, "the cursor to reach the end")

    assert list(range(size)) == receiver.indices()
    eventually(lambda: exporter.failures == 0, "the failure count to reset")


def test_a_pass_reports_a_refusal_and_keeps_the_cursor(
        ledger: Ledger, receiver: Receiver, make_exporter: Callable[..., LedgerExporter]) -> None:
    size = fill(ledger, 10)
    exporter = make_exporter(receiver.url, batch_size=4, timeout=0.5)
    receiver.fail_from = 3  # Two batches pass, then the collector refuses the third.

    with pytest.raises(ExportFailed) as failed:
        exporter.export_pending()
    assert 8 == failed.value.exported == exporter.cursor
    assert "did not acknowledge records 8..9" in str(failed.value)

    receiver.fail_from = None
    assert 2 == exporter.export_pending()
    assert list(range(size)) == receiver.indices()


def test_a_restart_resumes_from_the_cursor(ledger: Ledger, receiver: Receiver,
                                           make_exporter: Callable[..., LedgerExporter]) -> None:
    fill(ledger, 10)
    first = make_exporter(receiver.url)
    assert 10 == first.export_pending()
    first.close()
    size = fill(ledger, 5, marker=1)

    second = make_exporter(receiver.url)
    assert 10 == second.cursor
    assert 5 == second.export_pending()

    assert list(range(size)) == receiver.indices()
    store = ledger._store
    if isinstance(store, SQLiteStore):
        cursor_file = Path(f"{store.path}.otlp-cursor")
        assert 0o600 == stat.S_IMODE(cursor_file.stat().st_mode)
        assert {"next": 15, "origin": ledger.origin} == {k: v for k, v in json.loads(cursor_file.read_bytes()).items()
                                                          if k != "saved"}
    else:
        assert b"15" == store.get_meta("otlp_cursor")


def test_a_crash_between_the_acknowledgement_and_the_cursor_sends_again(
        ledger: Ledger, receiver: Receiver, make_exporter: Callable[..., LedgerExporter]) -> None:
    size = fill(ledger, 10)
    crashing = make_exporter(receiver.url)

    def crash(following: int) -> None:
        raise OSError(28, "No space left on device")

    crashing._guard.save = crash  # type: ignore[method-assign]
    with pytest.raises(OSError):
        crashing.export_pending()
    crashing.close()
    assert 0 == crashing.cursor

    assert size == make_exporter(receiver.url).export_pending()

    indices = receiver.indices()
    assert [*range(size), *range(size)] == indices  # At least once: the batch went twice...
    assert list(range(size)) == sorted({r.index for r in receiver.records})  # ...and dedupes by index.


# -- one exporter per ledger ----------------------------------------------------------------------------------


def test_two_exporters_on_one_ledger_only_one_exports(
        ledger: Ledger, receiver: Receiver, make_exporter: Callable[..., LedgerExporter]) -> None:
    one = make_exporter(receiver.url).start()
    two = make_exporter(receiver.url).start()
    eventually(lambda: one.holding or two.holding, "one exporter to take the lock")
    size = fill(ledger, 30)

    eventually(lambda: len(receiver.records) >= size and max(one.cursor, two.cursor) == size, "every record")
    assert list(range(size)) == receiver.indices()
    assert 1 == [one.holding, two.holding].count(True)
    leader, standby = (one, two) if one.holding else (two, one)
    assert (size, 0) == (leader.exported, standby.exported)
    with pytest.raises(LedgerLocked):
        standby.export_pending()

    leader.close()  # The other takes over.
    eventually(lambda: standby.holding, "the standby to take over")
    size = fill(ledger, 10, marker=1)
    eventually(lambda: standby.cursor == size, "the new records")
    assert list(range(size)) == receiver.indices()
    assert 10 == standby.exported


@sqlite_only
def test_the_lock_of_a_sqlite_ledger_is_an_flock_beside_it(
        ledger: Ledger, receiver: Receiver, make_exporter: Callable[..., LedgerExporter]) -> None:
    exporter = make_exporter(receiver.url).start()
    eventually(lambda: exporter.holding, "the lock")
    lock = Path(f"{ledger._store.path}.otlp.lock")
    assert f"process {os.getpid()}" == lock.read_text().strip()
    with open(lock) as handle:
        with pytest.raises(BlockingIOError):
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        exporter.close()
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # Released on close.


# -- the request path -----------------------------------------------------------------------------------


def test_a_hanging_collector_never_blocks_appending(
        ledger: Ledger, receiver: Receiver, make_exporter: Callable[..., LedgerExporter]) -> None:
    receiver.set_mode("hang")
    fill(ledger, 1)
    exporter = make_exporter(receiver.url, timeout=120.0).start()
    assert receiver.wait_for(lambda: receiver.hanging >= 1), "the exporter never reached the collector"

    indices = [ledger.append({"kind": "log", "n": n}, timeout=30) for n in range(20)]
    for n in range(30):
        ledger.submit({"kind": "log", "m": n})
    size = ledger.flush(timeout=30)

    assert 1 == receiver.hanging and 1 == receiver.attempts  # Still stuck in its first request...
    assert list(range(1, 21)) == indices and 51 == size  # ...while every append went through.
    receiver.set_mode("ok")  # The hung request gets its 503; the retry succeeds.
    eventually(lambda: exporter.cursor == size, "every record")
    assert list(range(size)) == receiver.indices()


# -- pruning, damaged cursors -------------------------------------------------------------------------------


def test_pruned_records_are_skipped_with_a_warning(
        ledger: Ledger, receiver: Receiver, make_exporter: Callable[..., LedgerExporter]) -> None:
    size = fill(ledger, 9)
    assert 6 == ledger.prune(6, now=time.time() + 20 * 365 * 86400)
    exporter = make_exporter(receiver.url)

    with capture_logs() as logs:
        assert 3 == exporter.export_pending()

    assert list(range(6, size)) == receiver.indices()
    skipped = [entry for entry in logs if entry["event"] == "otlp_records_skipped"]
    assert 1 == len(skipped) and 6 == skipped[0]["skipped"] and "warning" == skipped[0]["log_level"]


@sqlite_only
def test_a_damaged_or_foreign_cursor_file_is_refused(
        ledger: Ledger, receiver: Receiver, make_exporter: Callable[..., LedgerExporter]) -> None:
    fill(ledger, 3)
    cursor_file = Path(f"{ledger._store.path}.otlp-cursor")
    exporter = make_exporter(receiver.url)
    for content in (b"not json", b'{"next": -1}', b'{"next": true}', b"[]"):
        cursor_file.write_bytes(content)
        with pytest.raises(UnusableInput, match="not an OTLP exporter cursor"):
            exporter.export_pending()
    cursor_file.write_bytes(b'{"next": 1, "origin": "elsewhere.example/ledger"}')
    with pytest.raises(UnusableInput, match="belongs to the ledger 'elsewhere.example/ledger'"):
        exporter.export_pending()
    assert [] == receiver.records

    cursor_file.write_bytes(b'{"next": 99}')  # Past the end: the ledger was replaced.
    with capture_logs() as logs:
        assert 0 == exporter.export_pending()
    assert ["otlp_cursor_ahead"] == [e["event"] for e in logs if e["log_level"] == "error"]

    cursor_file.unlink()
    assert 3 == exporter.export_pending()


@pytest.mark.parametrize("ledger", ["postgres"], indirect=True)
def test_a_damaged_cursor_row_is_refused(ledger: Ledger, receiver: Receiver,
                                         make_exporter: Callable[..., LedgerExporter]) -> None:
    fill(ledger, 2)
    ledger._store.put_meta({"otlp_cursor": b"one"})
    with pytest.raises(UnusableInput, match="otlp_cursor"):
        make_exporter(receiver.url).export_pending()


# -- closing ----------------------------------------------------------------------------------------------------


def test_close_exports_what_is_pending_first(ledger: Ledger, receiver: Receiver,
                                             make_exporter: Callable[..., LedgerExporter]) -> None:
    exporter = make_exporter(receiver.url, poll_interval=3600.0).start()
    eventually(lambda: exporter.holding, "the lock")
    size = fill(ledger, 12)

    exporter.close(timeout=30.0)
    exporter.close(timeout=30.0)  # Idempotent.

    assert list(range(size)) == receiver.indices()
    assert not exporter.holding
    with pytest.raises(LedgerError, match="closed"):
        exporter.export_pending()
    with pytest.raises(LedgerError, match="closed"):
        exporter.start()


def test_close_gives_up_on_a_dead_collector_within_its_timeout(
        ledger: Ledger, receiver: Receiver, make_exporter: Callable[..., LedgerExporter]) -> None:
    receiver.set_mode("unavailable")
    fill(ledger, 3)
    exporter = make_exporter(receiver.url, timeout=0.5).start()
    eventually(lambda: exporter.failures >= 1, "a failed attempt")

    started = time.monotonic()
    exporter.close(timeout=1.0)

    assert time.monotonic() - started < 10
    assert 0 == exporter.cursor and not exporter.holding


# -- the profile ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("table", "message"), [
    ({}, "[otlp] endpoint is missing"),
    ({"endpoint": "collector:4318"}, "must be an http:// or https:// URL"),
    ({"endpoint": "ftp://collector/v1/logs"}, "got scheme 'ftp'"),
    ({"endpoint": "http:///v1/logs"}, "endpoint has no host"),
    ({"endpoint": 4318}, "endpoint must be a URL"),
    ({"endpoint": "env:NO_SUCH_VARIABLE_HERE"}, "names the environment variable NO_SUCH_VARIABLE_HERE"),
    ({"endpoint": "http://c:4318/v1/logs", "headers": "x"}, "headers must be a table"),
    ({"endpoint": "http://c:4318/v1/logs", "headers": {"bad name": "x"}}, "'bad name' is not a valid HTTP header"),
    ({"endpoint": "http://c:4318/v1/logs", "headers": {"x-key": 1}}, "headers.x-key must be a string"),
    ({"endpoint": "http://c:4318/v1/logs", "headers": {"x-key": "env:NOT_SET_HERE"}},
     "headers.x-key names the environment variable NOT_SET_HERE, which is not set"),
    ({"endpoint": "http://c:4318/v1/logs", "headers": {"x-key": "a\r\nb"}}, "must not contain line breaks"),
    ({"endpoint": "http://c:4318/v1/logs", "timeout": 0}, "timeout must be a number of seconds above 0"),
    ({"endpoint": "http://c:4318/v1/logs", "timeout": True}, "timeout must be"),
    ({"endpoint": "http://c:4318/v1/logs", "batch_size": 0}, "batch_size must be a whole number from 1"),
    ({"endpoint": "http://c:4318/v1/logs", "batch_size": 2.5}, "batch_size must be"),
    ({"endpoint": "http://c:4318/v1/logs", "batchsize": 10}, "unknown keys batchsize"),
])
def test_bad_otlp_tables_are_named(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        OTLPSettings.parse(table, source="aiobligations.toml", environ={})
    assert str(raised.value).startswith("aiobligations.toml: ")
    assert message in str(raised.value)


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(ConfigurationError) as raised:
        OTLPSettings.parse({"endpoint": "ftp://x", "timeout": -1, "batch_size": 0}, environ={})
    assert 3 == str(raised.value).count("[otlp]")
    with pytest.raises(ConfigurationError, match=r"\[otlp\] must be a table"):
        OTLPSettings.parse("http://collector:4318/v1/logs")


def test_header_values_come_from_the_environment_and_are_never_shown(
        receiver: Receiver, make_ledger: Callable[..., Ledger]) -> None:
    secret = f"s3cr3t-{os.urandom(8).hex()}"
    settings = OTLPSettings.parse({"endpoint": receiver.url, "headers": {"x-api-key": "env:TEST_KEY",
                                                                          "x-tenant": "acme"}},
                                  environ={"TEST_KEY": secret})
    assert {"x-api-key": secret, "x-tenant": "acme"} == dict(settings.headers)
    assert secret not in repr(settings)
    ledger = make_ledger()
    fill(ledger, 2)

    exporter = settings.exporter(ledger)
    try:
        with capture_logs() as logs:
            exporter.start()
            eventually(lambda: exporter.cursor == 2, "the records")
            exporter.close()
    finally:
        exporter.close()

    assert all(h["x-api-key"] == secret and h["x-tenant"] == "acme" for h in receiver.headers)
    assert secret not in repr(logs) and secret not in repr(exporter)


def test_the_otel_packages_are_named_when_missing(monkeypatch: pytest.MonkeyPatch,
                                                  make_ledger: Callable[..., Ledger]) -> None:
    monkeypatch.setattr(otlp, "_OTEL", None)
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http._log_exporter", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'aiobligations\[otlp\]'"):
        LedgerExporter(make_ledger(), "http://127.0.0.1:4318/v1/logs")


def test_arguments_are_checked(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger()
    for endpoint in ("grpc://c:4317", "", "http://"):
        with pytest.raises(ConfigurationError, match="endpoint"):
            LedgerExporter(ledger, endpoint)
    with pytest.raises(ConfigurationError, match="batch_size"):
        LedgerExporter(ledger, "http://c:4318/v1/logs", batch_size=0)
    with pytest.raises(ConfigurationError, match="timeout"):
        LedgerExporter(ledger, "http://c:4318/v1/logs", timeout=-1)
    with pytest.raises(ConfigurationError, match="header"):
        LedgerExporter(ledger, "http://c:4318/v1/logs", headers={"x": "a\nb"})
    assert "user" not in otlp.redact_endpoint("https://user:pw@c:4318/v1/logs?token=x")
    assert "https://c:4318/v1/logs" == otlp.redact_endpoint("https://user:pw@c:4318/v1/logs?token=x")


# -- the hub and the command line ------------------------------------------------------------------------------


def _project(tmp_path: Path, otlp_table: str = "") -> Path:
    config = init_project(tmp_path / "svc")
    text = config.read_text(encoding="utf-8").replace('writer = "process"', 'writer = "thread"')
    config.write_text(text + otlp_table, encoding="utf-8")
    return config


def test_obligations_runs_the_exporter_the_profile_asks_for(tmp_path: Path, receiver: Receiver) -> None:
    config = _project(tmp_path, f'\n[otlp]\nendpoint = "{receiver.url}"\nbatch_size = 64\ntimeout = 5\n')
    hub = Obligations.from_file(config)
    try:
        assert hub.otlp is not None and 64 == hub.otlp.batch_size
        index = hub.ledger.append({"kind": "risk", "summary": "prompt injection seen"})
        eventually(lambda: hub.otlp.cursor == index + 1, "the record")
    finally:
        hub.close()
    assert not hub.otlp.holding
    (record,) = receiver.records
    assert "Example Assistant" == record.resource["service.name"]
    assert "risk" == record.attributes["aiobligations.kind"]

    built = exporter_from_profile(load_profile(config), _Stub(hub.ledger))  # Built, not started.
    assert built is not None and receiver.url == built.endpoint and 64 == built.batch_size
    assert not built.holding


class _Stub:
    """A closed ledger's store and origin: enough to build (not run) an exporter."""

    def __init__(self, ledger: Ledger) -> None:
        self._store = ledger._store
        self.origin = ledger.origin


def test_a_bad_otlp_table_fails_before_the_ledger_opens(tmp_path: Path) -> None:
    config = _project(tmp_path, '\n[otlp]\nendpoint = "collector:4318"\n')
    with pytest.raises(ConfigurationError, match="endpoint must be an http"):
        Obligations.from_file(config)
    assert not (config.parent / "ledger.db").exists()
    assert None is OTLPSettings.from_profile(load_profile(_project(tmp_path / "plain")))


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(main, ["export-otlp", *args])


def test_the_cli_exports_in_one_pass(tmp_path: Path, receiver: Receiver) -> None:
    config = _project(tmp_path)
    with Obligations.from_file(config) as hub:
        size = fill(hub.ledger, 7)

    done = run_cli("--endpoint", receiver.url, "--config", str(config))
    assert 0 == done.exit_code, done.output
    assert f"exported {size} records to {receiver.url}; next index {size}" in done.output
    assert list(range(size)) == receiver.indices()
    again = run_cli("--endpoint", receiver.url, "--config", str(config))
    assert 0 == again.exit_code and "exported 0 records" in again.output

    with Obligations.from_file(config) as hub:
        hub.ledger.append({"kind": "log"})
    receiver.set_mode("unavailable")
    quick = config.with_name("quick.toml")  # The same ledger, and the collector's timeout from [otlp].
    quick.write_text(config.read_text() + f'\n[otlp]\nendpoint = "{receiver.url}"\ntimeout = 0.5\n')
    refused = run_cli("--config", str(quick))
    assert 1 == refused.exit_code and "did not acknowledge records 7..7" in refused.output
    assert "the rest wait in the ledger" in refused.output

    bad = run_cli("--endpoint", "ftp://collector", "--config", str(config))
    assert 2 == bad.exit_code and "http:// or https://" in bad.output
    nowhere = run_cli("--config", str(config))
    assert 2 == nowhere.exit_code and "give --endpoint" in nowhere.output
    missing = run_cli("--endpoint", receiver.url, "--config", str(tmp_path / "nope.toml"))
    assert 2 == missing.exit_code


def test_the_cli_defers_to_a_running_exporter(tmp_path: Path, receiver: Receiver) -> None:
    config = _project(tmp_path, f'\n[otlp]\nendpoint = "{receiver.url}"\n')
    with Obligations.from_file(config) as hub:
        assert hub.otlp is not None
        eventually(lambda: hub.otlp.holding, "the service's exporter to take the lock")
        busy = run_cli("--config", str(config))
        assert 1 == busy.exit_code and "another process exports" in busy.output


@pytest.mark.parametrize("ledger", ["postgres"], indirect=True)
def test_the_cli_exports_a_postgresql_ledger(tmp_path: Path, ledger: Ledger, receiver: Receiver,
                                             pg_url: str, pg_schema: str) -> None:
    size = fill(ledger, 5)
    config = _project(tmp_path, f'\n[otlp]\nendpoint = "{receiver.url}"\n')
    text = config.read_text(encoding="utf-8").replace(
        "[ledger]\n", f'[ledger]\nurl = "{pg_url}"\nschema = "{pg_schema}"\n', 1)
    config.write_text(text, encoding="utf-8")  # The origin is read from the ledger itself.

    done = run_cli("--config", str(config))

    assert 0 == done.exit_code, done.output
    assert f"exported {size} records" in done.output
    assert list(range(size)) == receiver.indices()
    assert str(size).encode() == ledger._store.get_meta("otlp_cursor")


def test_the_cli_follows_until_sigterm(tmp_path: Path, receiver: Receiver) -> None:
    config = _project(tmp_path)
    with Obligations.from_file(config) as hub:
        size = fill(hub.ledger, 4)
        process = subprocess.Popen(
            [sys.executable, "-m", "aiobligations.cli", "export-otlp", "--follow", "--endpoint", receiver.url,
             "--config", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "NO_PROXY": "127.0.0.1"})
        try:
            assert receiver.wait_for(lambda: len(receiver.records) >= size), "the follower sent nothing"
            size = fill(hub.ledger, 3, marker=1)  # Appended while it follows.
            assert receiver.wait_for(lambda: len(receiver.records) >= size), "the follower missed new records"
        finally:
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=60)
    assert 0 == process.returncode, err
    assert f"exported {size} records" in out
    assert list(range(size)) == receiver.indices()
