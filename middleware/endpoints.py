"""The endpoints the middleware serves itself: transparency (JSON and HTML), checkpoint, security.txt.

They come from the profile, rendered once at start-up (the profile does not change while the
service runs), so serving them costs a dictionary lookup.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import structlog

from aiobligations.controls.termination import with_termination
from aiobligations.disclosure import (
    ascii_safe,
    banner_html,
    disclosure_header,
    first_contact_notice,
    meta_tag,
    negotiate_language,
    render_transparency_page,
    security_txt,
    short_notice,
    transparency_document,
    with_incidents,
    with_witness_conflicts,
)
from aiobligations.errors import LedgerBroken, LedgerClosed, LedgerError, LedgerFull, LedgerLocked
from aiobligations.ledger.receipts import make_receipt
from aiobligations.obligations import Obligations
from aiobligations.sharedstate import shared_state_of
from aiobligations.witness.client import ConflictWatch

from .controls import ControlEndpoints
from .openapi import openapi_document
from .request_pages import RequestPages
from .requests import OPERATOR_TOKENS_ENV, EvidenceAlarm, RequestEndpoints, load_operator_tokens
from .termination import TerminationEndpoints
from .types import Receive, Scope, Send

log = structlog.get_logger("aiobligations.middleware")

__all__ = ["TRANSPARENCY_JSON", "Endpoints"]


_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

TRANSPARENCY_JSON = "/.well-known/ai-transparency"
SECURITY_TXT = "/.well-known/security.txt"


class Endpoints:
    """The middleware's own routes, and the disclosure texts it inserts into responses.

    Args:
        obligations: The hub, whose profile the texts come from.
        prefix: Where the ``/ai/...`` endpoints live.

    .. versionadded:: 0.1.0
    """

    def __init__(self, obligations: Obligations, *, prefix: str = "/ai",
                 subject_of: Callable[[Scope], str | None] | None = None) -> None:
        prefix = "/" + prefix.strip("/")
        self.obligations = obligations
        self._subject_of = subject_of or (lambda scope: None)
        self._receipts = f"{prefix}/receipts/"
        self._decoy: int | None = None  # The last interaction row looked up: what an unknown id reads.
        self.alarm = EvidenceAlarm()
        """Raised once when a request meets evidence that does not read or verify; see ``/ai/health``."""
        # Operators sign in with tokens from the environment (never from the profile file).
        variable = str(obligations.profile.raw.get("requests", {}).get("operator_tokens_env", OPERATOR_TOKENS_ENV))
        # Rate limits hold for every worker process of the host: their buckets live beside the ledger.
        shared_path, shared_secret = shared_state_of(obligations)
        self.requests = RequestEndpoints(
            lambda: obligations.requests,
            prefix=prefix,
            subject_of=self._subject_of,
            operator_tokens=load_operator_tokens(variable=variable),
            shared_path=shared_path,
            shared_secret=shared_secret,
            # Replicas on several hosts share their buckets through the ledger's database.
            shared_store=obligations.ledger._store if obligations.profile.ledger.url else None,
            alarm=self.alarm,
        )
        self.request_pages = RequestPages(lambda: self.requests.desk, prefix=prefix, subject_of=self._subject_of,
                                          language=obligations.disclosure.language,
                                          transparency_url=f"{prefix}/transparency",
                                          on_break=self.alarm.report, limit=self.requests.limit_wait)
        self.prefix = prefix
        self.disclosure = settings = obligations.disclosure
        profile = obligations.profile
        ledger = obligations.ledger
        self.document = transparency_document(
            profile, settings, prefix=prefix, verifier_key=ledger.signer.verifier_key, origin=ledger.origin
        )
        self.document_version: str = self.document["version"]
        # Incidents and the takeover switch (Art. 37, 52(4)): the state every process follows.
        self.control_state = obligations.controls
        self.controls = ControlEndpoints(self.control_state, prefix=prefix, authorize=self.requests._operator_of,
                                         profile=profile, language=settings.language)
        self._live_snapshot: object = None
        # The termination plan (Art. 50): its announcement is in the document and the page while it stands.
        self.termination = obligations.termination
        self._live_plan: object = None
        self.termination_endpoint = TerminationEndpoints(self.termination, prefix=prefix,
                                                         authorize=self.requests._operator_of)
        # Witnesses' conflict answers (witness.conflict records): the document says so openly.
        self.witness_conflicts = ConflictWatch(ledger)
        self._live_conflicts: object = None
        self._render_live()
        lang = settings.language
        self.transparency_url = f"{prefix}/transparency"
        self.short_notice = short_notice(settings, lang)
        self.first_contact_notice = first_contact_notice(settings, lang, transparency_url=self.transparency_url)
        extra: dict[str, Any] = {}
        if profile.service.filing_number:
            extra["filing"] = ascii_safe(profile.service.filing_number)
        if profile.service.licence_number:
            extra["licence"] = ascii_safe(profile.service.licence_number)
        header = disclosure_header(
            mode=settings.mode,
            provider=ascii_safe(profile.provider.name),
            model=ascii_safe(profile.service.model) if profile.service.model else None,
            extra=extra,
            form=settings.header_form,
        )
        self._header_prefix = header.encode()
        self._date_separator = b"; " if settings.header_form == ";" else b", "
        self._dated: tuple[int, bytes] = (-1, b"")
        self.meta_tag = meta_tag(settings.mode).encode()
        self._json_notice = {flag: self._json_notice_parts(flag) for flag in (False, True)}
        self._routes = {
            TRANSPARENCY_JSON: self._transparency_json,
            SECURITY_TXT: self._security_txt,
            f"{prefix}/transparency": self._transparency_html,
            f"{prefix}/checkpoint": self._checkpoint,
            f"{prefix}/openapi.json": self._openapi,
            f"{prefix}/health": self._health,
        }
        self._checkpoint_path = f"{prefix}/checkpoint"
        self._openapi_json = json.dumps(openapi_document(prefix), ensure_ascii=False, indent=1).encode()

    @property
    def disclosure_header(self) -> bytes:
        """The ``AI-Disclosure`` value, dated now (made once a second)."""
        now = int(time.time())
        cached = self._dated
        if cached[0] != now:
            cached = self._dated = (now, self._header_prefix + self._date_separator + b"date=@%d" % now)
        return cached[1]

    def _render_live(self) -> None:
        """Render the document and the pages again when the open incidents changed (Art. 37).

        Runs on the event loop, but only reads the controls' snapshot (no I/O), and renders only
        when another snapshot was swapped in since the last time.
        """
        snapshot = self.control_state.snapshot
        plan = self.termination.plan
        conflicts = self.witness_conflicts.current()  # Read in the background, never here.
        if snapshot is self._live_snapshot and plan is self._live_plan and conflicts is self._live_conflicts:
            return
        listed = [{"id": i.id, "title": i.title, "url": self.controls.incident_url(i.id),
                   "opened": i.as_dict()["opened"]} for i in snapshot.open_incidents]
        provider = self.obligations.profile.provider
        document = with_termination(with_witness_conflicts(with_incidents(self.document, listed), list(conflicts)),
                                    plan,
                                    provider={"zh": provider.name_zh or provider.name, "en": provider.name},
                                    service=self.obligations.profile.service.name, url=f"{self.prefix}/transparency")
        self._document_json = json.dumps(document, ensure_ascii=False, indent=1).encode()
        self._pages = {lang: render_transparency_page(document, lang).encode() for lang in ("zh", "en")}
        self._live_snapshot = snapshot
        self._live_plan = plan
        self._live_conflicts = conflicts

    def handles(self, path: str) -> bool:
        """Whether ``path`` is one of these endpoints."""
        return (path in self._routes or path.startswith(self._receipts) or self.controls.handles(path)
                or self.termination_endpoint.handles(path)
                or self.requests.handles(path) or self.request_pages.handles(path))

    def json_notice_parts(self, first_contact: bool) -> tuple[bytes, bytes]:
        """The ``ai_disclosure`` member before and after its interaction id (a UUID, nothing to escape)."""
        return self._json_notice[first_contact]

    def _json_notice_parts(self, first_contact: bool) -> tuple[bytes, bytes]:
        # Rendered once: per response only the interaction id (a UUID, nothing to escape) changes.
        notice: dict[str, Any] = {
            "notice": self.short_notice,
            "interaction_id": "\x00",
            "transparency": TRANSPARENCY_JSON,
        }
        if first_contact:
            notice["first_contact_notice"] = self.first_contact_notice
        text = json.dumps(notice, ensure_ascii=False, separators=(",", ":")).encode()
        head, tail = text.split(b"\\u0000")
        return head, tail

    def language(self, scope: Scope) -> str:
        """The language a person asked for (``Accept-Language``), else the profile's."""
        for key, value in scope.get("headers", ()):
            if key == b"accept-language":
                return negotiate_language(value.decode("latin-1"), None, self.disclosure.language)
        return self.disclosure.language

    def banner(self, interaction_id: str, first_contact: bool, lang: str | None = None) -> bytes:
        """The HTML banner, as ASCII with character references so it fits any page charset."""
        html = banner_html(
            self.disclosure,
            lang or self.disclosure.language,
            transparency_url=self.transparency_url,
            interaction_id=interaction_id,
            first_contact=first_contact,
        )
        return html.encode("ascii", "xmlcharrefreplace")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one of the endpoints."""
        if self.termination_endpoint.handles(scope["path"]):  # Before the desk's, as the controls'.
            await self.termination_endpoint(scope, receive, send)
            return
        if self.controls.handles(scope["path"]):  # Before the desk's: it takes every {prefix}/operator/ path.
            await self.controls(scope, receive, send)
            return
        if self.requests.handles(scope["path"]):
            await self.requests(scope, receive, send)
            return
        if self.request_pages.handles(scope["path"]):
            await self.request_pages(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            await self.error(send, 405, "method_not_allowed", "use GET", extra=[(b"allow", b"GET, HEAD")])
            return
        if scope["path"].startswith(self._receipts):
            status, content_type, body = await asyncio.to_thread(self._receipt, scope)
        elif scope["path"] == self._checkpoint_path:
            # A PostgreSQL ledger reads it from the database: off the event loop.
            status, content_type, body = await asyncio.to_thread(self._checkpoint, scope)
        else:
            status, content_type, body = self._routes[scope["path"]](scope)
        headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-cache" if status == 200 else b"no-store"),
            (b"x-content-type-options", b"nosniff"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})

    async def error(self, send: Send, status: int, code: str, message: str,
                    *, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        """Send the contract's JSON error, ``{"error": {"code": ..., "message": ...}}``."""
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   *(extra or [])]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    # -- the routes ----------------------------------------------------------------------------------

    def _transparency_json(self, scope: Scope) -> tuple[int, bytes, bytes]:
        self._render_live()
        return 200, b"application/json", self._document_json

    def _transparency_html(self, scope: Scope) -> tuple[int, bytes, bytes]:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("lang", [None])[0]
        accept = None
        for key, value in scope.get("headers", ()):
            if key == b"accept-language":
                accept = value.decode("latin-1")
        lang = negotiate_language(accept, query, self.disclosure.language)
        self._render_live()
        return 200, b"text/html; charset=utf-8", self._pages[lang]

    def _openapi(self, scope: Scope) -> tuple[int, bytes, bytes]:
        return 200, b"application/json", self._openapi_json

    def _checkpoint(self, scope: Scope) -> tuple[int, bytes, bytes]:
        # With witnesses, the latest checkpoint they cosigned, their cosignature lines appended.
        ledger = self.obligations.ledger
        note = ledger.witnessed_checkpoint or ledger.checkpoint
        if note is None:
            body = json.dumps({"error": {"code": "no_checkpoint", "message": "no checkpoint signed yet"}})
            return 404, b"application/json", body.encode()
        return 200, b"text/plain; charset=utf-8", note.encode()

    def _health(self, scope: Scope) -> tuple[int, bytes, bytes]:
        """200 while the ledger takes records, else 503: a readiness probe that means what it says
        (a replica whose database is unreachable, or a full queue, answers 503). Once a request has
        met evidence that does not verify, the 200 says ``"evidence": "break_detected"`` too."""
        if self.obligations.ledger.accepting:
            if self.alarm.raised:
                return 200, b"application/json", json.dumps(
                    {"ledger": "accepting", "evidence": "break_detected", "breaks": self.alarm.breaks}).encode()
            return 200, b"application/json", b'{"ledger":"accepting"}'
        body = {"error": {"code": "evidence_unavailable", "message": "the ledger cannot take records now"}}
        return 503, b"application/json", json.dumps(body).encode()

    def _receipt(self, scope: Scope) -> tuple[int, bytes, bytes]:
        """The subject's receipt for one of their interactions (C2SP tlog-proof).

        Only the interaction's own subject gets it; an unknown id and someone else's id get the
        same 404, so ids cannot be probed, and they cost the same work: one flush, one indexed
        lookup, one row read and parsed, one pseudonym compared in constant time (an unknown id
        reads the last interaction row looked up); only the subject's own id goes on to build
        the receipt. Runs on a worker thread: it reads the ledger.

        A row that does not read as the interaction the index names, or a receipt that does not
        verify against the ledger's own checkpoint (the database was altered), raises the
        :class:`~aiobligations.middleware.requests.EvidenceAlarm`; everyone gets the same 404,
        except the subject the row still names, who gets 409 ``evidence_unverifiable``.
        """
        interaction_id = scope["path"][len(self._receipts):]
        subject = self._subject_of(scope)
        missing = (404, b"application/json", json.dumps(
            {"error": {"code": "not_found", "message": "no such interaction of yours"}}).encode())
        if subject is None or not _UUID.match(interaction_id):
            return missing
        ledger = self.obligations.ledger
        unavailable = (503, b"application/json", json.dumps({"error": {
            "code": "evidence_unavailable", "message": "the ledger cannot answer now; try again later"}}).encode())
        try:
            ledger.flush(timeout=5)
            index = ledger.find_interaction(interaction_id)
            known = index is not None and index >= ledger.first_index
            probe = index if known else self._decoy
            leaf = ledger.leaf(probe) if probe is not None else None
        except LedgerError as exc:  # The ledger cannot answer now (full, restarting, closing).
            log.warning("receipt_unavailable", error=type(exc).__name__)
            return unavailable
        try:
            record = json.loads(leaf) if leaf is not None else None
        except ValueError:
            record = None
        claimed = record.get("subject") if isinstance(record, dict) else None
        mine = hmac.compare_digest(_utf8(claimed), _utf8(ledger.pseudonym(subject)))
        if not known or index is None or leaf is None:
            return missing
        if (not isinstance(record, dict) or record.get("kind") != "interaction"
                or record.get("interaction_id") != interaction_id):
            self.alarm.report(index, "the interaction index names a record that is not this interaction")
            return missing
        self._decoy = index
        if not mine:
            return missing
        try:
            text = make_receipt(ledger, index)
        except (LedgerFull, LedgerClosed, LedgerLocked) as exc:
            log.warning("receipt_unavailable", error=type(exc).__name__)
            return unavailable
        except (LedgerError, LedgerBroken, IndexError, ValueError) as exc:
            # The record or the tree above it was altered: the receipt would not verify.
            self.alarm.report(index, getattr(exc, "reason", None) or "the receipt does not verify")
            return 409, b"application/json", json.dumps({"error": {
                "code": "evidence_unverifiable",
                "message": "the evidence of this interaction failed verification; the provider has been "
                           "alerted and must check its ledger"}}).encode()
        return 200, b"text/plain; charset=utf-8", text.encode()

    def _security_txt(self, scope: Scope) -> tuple[int, bytes, bytes]:
        return 200, b"text/plain; charset=utf-8", security_txt(self.disclosure, now=datetime.now(UTC)).encode()


def _utf8(value: object) -> bytes:
    """``value`` as bytes for a constant-time comparison (anything but a string compares as empty)."""
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else b""
