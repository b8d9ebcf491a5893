"""The request desk: explanation requests (Art. 39), complaints (Art. 70(4), 32) and their deadlines.

The ledger is the system of record. Every step of a request is an ``explanation`` record and every
step of a general complaint a ``complaint`` record, appended durably before the step counts; the
desk's in-memory state is only a cache rebuilt from those records when it is built, so a restart
loses no request and recomputes no deadline (the ``due`` of each request is stored, not derived).

An explanation request moves through these states::

    received ──▶ in_review ──▶ answered ──┐
                     │                    ├──▶ complained ──▶ resolved
                     └───────▶ rejected ──┘

Personal data (the question, contact, answer, factors, reasons, complaint texts and the subject's
own id) goes only under a record's ``personal`` member, which the ledger seals under the subject's
key; the clear part holds ids, steps, times and deadlines. Erasing the subject therefore leaves the
desk knowing that a request existed, when it was due and what became of it, but none of its texts.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeAlias

import structlog

from ..errors import LedgerBroken, ObligationError
from ..interaction import uuid7
from ..ledger.follow import LogFold
from .calendar import (
    DEFAULT_DEADLINE_DAYS,
    ChinaCalendar,
    WorkingCalendar,
    add_working_days,
)

if TYPE_CHECKING:
    from ..obligations import Obligations

__all__ = [
    "COMPLAINT_CATEGORIES",
    "Complaint",
    "Explainer",
    "Explanation",
    "InvalidRequest",
    "InvalidTransition",
    "NotFound",
    "Request",
    "RequestDesk",
    "Step",
]

log = structlog.get_logger("aiobligations.requests")

COMPLAINT_CATEGORIES = ("general", "ip", "report")
"""General complaints, IP complaints (Art. 70(4)) and reports of unlawful content (Art. 32)."""

# Which step may follow which, for explanation requests.
_NEXT: Mapping[str, frozenset[str]] = MappingProxyType({
    "received": frozenset({"in_review"}),
    "in_review": frozenset({"answered", "rejected"}),
    "answered": frozenset({"complained"}),
    "rejected": frozenset({"complained"}),
    "complained": frozenset({"resolved"}),
    "resolved": frozenset(),
})
_OPEN = frozenset({"received", "in_review", "complained"})
_DECIDED = frozenset({"answered", "rejected"})
_NOT_FOUND = "no such request"
_NO_INTERACTION = "no such interaction"
_NO_COMPLAINT = "no such complaint"


def _utf8(value: object) -> bytes:
    """``value`` as bytes for a constant-time comparison (anything but a string compares as empty)."""
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else b""
_MAX_TEXT = 20_000
_FOLLOWED = ("explanation", "complaint", "subject.erased")


class NotFound(ObligationError, LookupError):
    """The request, interaction or complaint does not exist, or belongs to someone else.

    Deliberately says no more: an unknown id and another person's id give the same message.
    """


class InvalidTransition(ObligationError):
    """The step is not allowed from the request's current state (e.g. answering it twice)."""


class InvalidRequest(ObligationError, ValueError):
    """An argument is invalid: an empty question, an unknown complaint category, a missing field."""


@dataclass(frozen=True)
class Explanation:
    """
    What an explainer returns: the answer's text and the factors behind it.

    Args:
        text: The explanation, in words the person can follow.
        factors: Structured factors (name → value), e.g. ``{"model": "m-1", "top_feature": "age"}``.

    .. versionadded:: 0.1.0
    """

    text: str
    factors: Mapping[str, Any] = field(default_factory=dict)


Explainer: TypeAlias = Callable[[dict[str, Any]], "Explanation | None"]
"""Takes the interaction record (``personal`` opened) and returns an Explanation, or None to decline."""


@dataclass(frozen=True)
class Step:
    """
    One step of a request or complaint, as recorded in the ledger.

    Args:
        step: ``received``, ``in_review``, ``answered``, ``rejected``, ``complained`` or ``resolved``.
        at: When the desk took the step (its clock), timezone-aware UTC.
        index: The ledger index of the step's record.
        by: The operator id (or ``"explainer"``, or ``"subject"``) who took it.

    .. versionadded:: 0.1.0
    """

    step: str
    at: datetime
    index: int
    by: str | None = None


@dataclass(frozen=True)
class Request:
    """
    An explanation request, as its subject (or an operator) may see it.

    Texts are ``None`` when they were never given or when the subject has been erased.

    .. versionadded:: 0.1.0
    """

    id: str
    interaction_id: str | None
    state: str
    received: datetime
    due: datetime
    question: str | None = None
    contact: str | None = None
    answered_at: datetime | None = None
    answer: str | None = None
    factors: Mapping[str, Any] | None = None
    reason: str | None = None
    automated: bool = False
    complaint: str | None = None
    complained_at: datetime | None = None
    complaint_due: datetime | None = None
    outcome: str | None = None
    resolved_at: datetime | None = None
    history: tuple[Step, ...] = ()

    @property
    def open(self) -> bool:
        """Whether the provider still owes a step (received, in review, or complained about)."""
        return self.state in _OPEN

    @property
    def current_due(self) -> datetime | None:
        """The deadline the provider is working to now: the complaint's when complained, else the request's."""
        if self.state == "complained":
            return self.complaint_due
        return self.due if self.state in _OPEN else None


@dataclass(frozen=True)
class Complaint:
    """
    A general complaint, an IP complaint (Art. 70(4)) or a report (Art. 32).

    .. versionadded:: 0.1.0
    """

    id: str
    category: str
    state: str
    received: datetime
    due: datetime
    text: str | None = None
    contact: str | None = None
    work: str | None = None
    right_holder: str | None = None
    output_ref: str | None = None
    outcome: str | None = None
    resolved_at: datetime | None = None
    history: tuple[Step, ...] = ()


def _ts(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _parse(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    return datetime.fromisoformat(text).astimezone(UTC)


def _json_value(name: str, value: Any) -> None:
    """Check that ``value`` is JSON a record can hold: finite numbers, UTF-8 text, bounded depth.

    Raises:
        InvalidRequest: NaN or an infinity, a lone surrogate, a value JSON cannot encode, nesting
            deeper than the encoder goes, or more than :data:`_MAX_TEXT` × 5 characters in all.
    """
    try:
        encoded = json.dumps(value, ensure_ascii=False, allow_nan=False).encode()
    except RecursionError:
        raise InvalidRequest(f"{name} is nested too deeply") from None
    except UnicodeEncodeError:
        raise InvalidRequest(f"{name} must be valid Unicode text (no lone surrogates)") from None
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"{name} must be plain JSON with finite numbers ({exc})") from None
    if len(encoded) > 5 * _MAX_TEXT:
        raise InvalidRequest(f"{name} is longer than {5 * _MAX_TEXT} bytes")


def _text(name: str, value: Any, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"{name} must be a non-empty string, got {value!r:.40}")
    if len(value) > _MAX_TEXT:
        raise InvalidRequest(f"{name} must be at most {_MAX_TEXT} characters, got {len(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # JSON allows lone surrogates ("\ud800"); no text holds them, and the ledger cannot store them.
        raise InvalidRequest(f"{name} is not valid text (it holds an unpaired surrogate)") from None
    return value


class RequestDesk(LogFold):
    """
    Explanation requests and complaints, kept as ledger records, with working-day deadlines.

    Building a desk reads every ``explanation`` and ``complaint`` record of the ledger, so a desk
    built after a restart knows every request, its state and its stored deadline. Build one desk
    per ledger and share it; its methods are thread-safe (each step waits for its durable append,
    so call them from a worker thread in async code, e.g. ``await asyncio.to_thread(desk.ask, ...)``).

    Args:
        obligations: The hub whose ledger holds the records.
        calendar: Which days are working days (default: mainland China's).
        deadline_days: Working days to answer a request or a complaint.
        clock: Returns the current time, timezone-aware (default: the system clock, UTC).

    .. versionadded:: 0.1.0
    """

    KINDS = _FOLLOWED
    LOCK = "desk"
    NAME = "requests"

    _decoy: int | None = None
    """The last interaction index looked up: the row an unknown id reads, so it costs what a known one does."""

    def __init__(
        self,
        obligations: Obligations,
        *,
        calendar: WorkingCalendar | None = None,
        deadline_days: int = DEFAULT_DEADLINE_DAYS,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if isinstance(deadline_days, bool) or not isinstance(deadline_days, int) or deadline_days < 0:
            raise InvalidRequest(f"deadline_days must be an int, 0 or more, got {deadline_days!r}")
        self.obligations = obligations
        self._start_fold(obligations.ledger)  # Every process's desk follows the one log.
        self.calendar: WorkingCalendar = calendar if calendar is not None else ChinaCalendar()
        self.deadline_days = deadline_days
        self._clock = clock or (lambda: datetime.now(UTC))
        self._explainer: Explainer | None = None
        self._requests: dict[str, Request] = {}
        self._complaints: dict[str, Complaint] = {}
        # Per request or complaint id: the subject's pseudonym (always known) and the subject itself
        # (known while it is sealed readable, needed to seal later steps for the same person).
        self._pseudonyms: dict[str, str] = {}
        self._subjects: dict[str, str] = {}
        self._rebuild()

    # -- rebuilding from the ledger ------------------------------------------------------------

    def _rebuild(self) -> None:
        self.ledger.flush()
        self._catch_up()

    def _fold(self, record: Mapping[str, Any], index: int) -> None:
        if record.get("kind") == "subject.erased":
            pseudonym = record.get("subject")
            if isinstance(pseudonym, str):
                self._forget_pseudonym(pseudonym)
        else:
            self._apply(record, index)

    @contextlib.contextmanager
    def _synced(self) -> Iterator[None]:
        """Hold the desk's lock, with everything stored so far folded in."""
        with self._lock:
            self._catch_up()
            yield

    def _apply(self, record: Mapping[str, Any], index: int) -> None:
        """Fold one stored step into the state. The ledger is the truth: nothing is refused here."""
        personal = record.get("personal")
        personal = personal if isinstance(personal, Mapping) else {}
        step = record.get("step")
        at = _parse(record.get("at")) or datetime.fromtimestamp(0, UTC)
        entry = Step(str(step), at, index, record.get("by"))
        if record.get("kind") == "complaint":
            self._apply_complaint(record, personal, entry)
            return
        request_id = record.get("request_id")
        if not isinstance(request_id, str):
            return
        if step == "received":
            due = _parse(record.get("due")) or at
            self._requests[request_id] = Request(
                id=request_id,
                interaction_id=record.get("interaction_id"),
                state="received",
                received=at,
                due=due,
                question=personal.get("question"),
                contact=personal.get("contact"),
                history=(entry,),
            )
            self._remember(request_id, record, personal)
            return
        current = self._requests.get(request_id)
        if current is None:
            log.warning("explanation_step_without_request", request_id=request_id, index=index)
            return
        changes: dict[str, Any] = {"state": step, "history": (*current.history, entry)}
        if step in _DECIDED:
            changes["answered_at"] = at
            changes["automated"] = record.get("by") == "explainer"
            if step == "answered":
                changes["answer"] = personal.get("text")
                factors = personal.get("factors")
                changes["factors"] = MappingProxyType(dict(factors)) if isinstance(factors, Mapping) else None
            else:
                changes["reason"] = personal.get("reason")
        elif step == "complained":
            changes["complaint"] = personal.get("text")
            changes["complained_at"] = at
            changes["complaint_due"] = _parse(record.get("due"))
        elif step == "resolved":
            changes["outcome"] = personal.get("outcome")
            changes["resolved_at"] = at
        elif step != "in_review":
            log.warning("explanation_step_unknown", request_id=request_id, index=index, step=str(step))
            return
        self._requests[request_id] = dataclasses.replace(current, **changes)

    def _apply_complaint(self, record: Mapping[str, Any], personal: Mapping[str, Any], entry: Step) -> None:
        complaint_id = record.get("complaint_id")
        if not isinstance(complaint_id, str):
            return
        if entry.step == "received":
            self._complaints[complaint_id] = Complaint(
                id=complaint_id,
                category=str(record.get("category")),
                state="received",
                received=entry.at,
                due=_parse(record.get("due")) or entry.at,
                text=personal.get("text"),
                contact=personal.get("contact"),
                work=personal.get("work"),
                right_holder=personal.get("right_holder"),
                output_ref=personal.get("output_ref"),
                history=(entry,),
            )
            self._remember(complaint_id, record, personal)
            return
        current = self._complaints.get(complaint_id)
        if current is None or entry.step != "resolved":
            log.warning("complaint_step_unknown", complaint_id=complaint_id, index=entry.index, step=entry.step)
            return
        self._complaints[complaint_id] = dataclasses.replace(
            current,
            state="resolved",
            outcome=personal.get("outcome"),
            resolved_at=entry.at,
            history=(*current.history, entry),
        )

    def _remember(self, key: str, record: Mapping[str, Any], personal: Mapping[str, Any]) -> None:
        pseudonym = record.get("subject")
        if isinstance(pseudonym, str):
            self._pseudonyms[key] = pseudonym
        subject = personal.get("subject")
        if isinstance(subject, str):
            self._subjects[key] = subject

    # -- writing steps -------------------------------------------------------------------------

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise InvalidRequest(f"the desk's clock must return an aware datetime, got {now!r}")
        return now.astimezone(UTC)

    def _due(self, start: datetime) -> datetime:
        return add_working_days(start, self.deadline_days, self.calendar)

    def _record(self, key: str, clear: dict[str, Any], personal: dict[str, Any] | None) -> dict[str, Any]:
        """Build a step's record, sealed for the subject while the desk knows who it is."""
        subject = self._subjects.get(key)
        if subject is not None:
            clear["subject"] = subject
            if personal:
                clear["personal"] = personal
        # Without the subject (erased) the texts have no key to be sealed under, so they are not kept.
        return clear

    def _step(self, request_id: str, step: str, *, by: str | None, extra: dict[str, Any] | None = None,
              personal: dict[str, Any] | None = None) -> Request:
        if by is not None and (not isinstance(by, str) or not by):
            raise InvalidRequest(f"by must be a non-empty string (an operator id), got {by!r}")
        with self._exclusive():
            current = self._requests.get(request_id) if isinstance(request_id, str) else None
            if current is None:
                raise NotFound(_NOT_FOUND)
            if step not in _NEXT[current.state]:
                allowed = ", ".join(sorted(_NEXT[current.state])) or "nothing (it is final)"
                raise InvalidTransition(
                    f"request {request_id} is {current.state}; it cannot become {step} (allowed next: {allowed})"
                )
            now = self._now()
            clear: dict[str, Any] = {"kind": "explanation", "request_id": request_id, "step": step, "at": _ts(now)}
            if by is not None:
                clear["by"] = by
            clear.update(extra or {})
            self._append(self._record(request_id, clear, personal))
            return self._requests[request_id]

    # -- the subject's side --------------------------------------------------------------------

    def ask(self, interaction_id: str, subject: str, question: str, *, contact: str | None = None) -> Request:
        """
        Ask for an explanation of one of the subject's own interactions.

        Args:
            interaction_id: The id the response carried in ``AI-Interaction-Id``.
            subject: Who asks (the authenticated user's id, as the interaction recorded it).
            question: What the person wants explained.
            contact: How to reach them, if they give it.

        Returns:
            The new request, ``received``, with its deadline.

        Raises:
            NotFound: No such interaction, or it belongs to another subject (the same error).
            InvalidRequest: The question or contact is empty or too long.
        """
        _text("question", question)
        _text("contact", contact, required=False)
        self._interaction(interaction_id, subject)
        with self._exclusive():
            now = self._now()
            request_id = str(uuid7())
            self._subjects[request_id] = subject
            personal: dict[str, Any] = {"subject": subject, "question": question}
            if contact is not None:
                personal["contact"] = contact
            clear = {
                "kind": "explanation",
                "request_id": request_id,
                "step": "received",
                "interaction_id": interaction_id,
                "at": _ts(now),
                "due": _ts(self._due(now)),
                "deadline_days": self.deadline_days,
            }
            try:
                self._append(self._record(request_id, clear, personal))
            except BaseException:
                self._subjects.pop(request_id, None)
                raise
            request = self._requests[request_id]
        log.info("explanation_received", request_id=request_id, due=_ts(request.due))
        return request

    def _interaction(self, interaction_id: str, subject: str) -> None:
        """Check that the interaction is the subject's own, else raise NotFound.

        An unknown id and someone else's id do the same work (one flush, one indexed lookup, one
        row read and parsed, one pseudonym compared in constant time; for an unknown id the row is
        the last interaction looked up), so the time taken does not tell them apart.

        Raises:
            NotFound: No such interaction, or another subject's (the same error).
            LedgerBroken: The index names a row that is not that interaction (the row was altered).
        """
        if not isinstance(interaction_id, str) or not interaction_id or len(interaction_id) > 200:
            raise NotFound(_NO_INTERACTION)
        if not isinstance(subject, str) or not subject:
            raise NotFound(_NO_INTERACTION)
        # Interactions are submitted without waiting: flush first, every time (flushing only on a
        # miss would make unknown ids slower than known ones).
        self.ledger.flush()
        index = self.ledger.find_interaction(interaction_id)
        known = index is not None and index >= self.ledger.first_index
        probe = index if known else self._decoy
        leaf = self.ledger.leaf(probe) if probe is not None else None
        try:
            record = json.loads(leaf) if leaf is not None else None
        except ValueError:
            record = None
        claimed = record.get("subject") if isinstance(record, dict) else None
        mine = hmac.compare_digest(_utf8(claimed), _utf8(self.ledger.pseudonym(subject)))
        if not known or leaf is None:  # Unknown, or pruned after its retention period.
            raise NotFound(_NO_INTERACTION)
        if (not isinstance(record, dict) or record.get("kind") != "interaction"
                or record.get("interaction_id") != interaction_id):
            raise LedgerBroken("the interaction index names a record that is not this interaction", index=index)
        self._decoy = index
        if not mine:
            raise NotFound(_NO_INTERACTION)

    def get(self, request_id: str, subject: str) -> Request:
        """
        The subject's own request.

        Raises:
            NotFound: No such request, or it belongs to another subject (the same error).
        """
        with self._synced():
            request = self._requests.get(request_id) if isinstance(request_id, str) else None
            # The pseudonym is computed and compared for unknown ids too: the same work either way.
            owned = self._owns(request_id if request is not None else "", subject)
            if request is None or not owned:
                raise NotFound(_NOT_FOUND)
            return request

    def _owns(self, key: str, subject: str) -> bool:
        if not isinstance(subject, str) or not subject:
            return False
        pseudonym = self._pseudonyms.get(key)
        return hmac.compare_digest(_utf8(pseudonym), _utf8(self.ledger.pseudonym(subject)))

    def complain(self, request_id: str, subject: str, text: str) -> Request:
        """
        Complain about the answer (or the rejection) of the subject's own request.

        The complaint gets its own deadline of ``deadline_days`` working days.

        Raises:
            NotFound: No such request, or it belongs to another subject.
            InvalidTransition: The request is not answered or rejected (or was complained about already).
            InvalidRequest: The text is empty or too long.
        """
        _text("text", text)
        with self._exclusive():
            self.get(request_id, subject)
            due = self._due(self._now())
            request = self._step(request_id, "complained", by="subject", extra={"due": _ts(due)},
                                 personal={"text": text})
        log.info("explanation_complained", request_id=request_id, due=_ts(due))
        return request

    # -- the operators' side -------------------------------------------------------------------

    def request(self, request_id: str) -> Request:
        """Any request, for operators. Raises NotFound when there is no such request."""
        with self._synced():
            found = self._requests.get(request_id) if isinstance(request_id, str) else None
            if found is None:
                raise NotFound(_NOT_FOUND)
            return found

    def start_review(self, request_id: str, *, by: str) -> Request:
        """Take a received request into review. Raises InvalidTransition unless it is ``received``."""
        return self._step(request_id, "in_review", by=by)

    def answer(self, request_id: str, text: str, *, factors: Mapping[str, Any] | None = None, by: str) -> Request:
        """
        Answer a request in review.

        Args:
            request_id: The request.
            text: The explanation.
            factors: Structured factors behind the decision (JSON values); sealed like the text.
            by: The operator's id (kept in clear, for accountability).

        Raises:
            InvalidTransition: The request is not in review.
        """
        _text("text", text)
        if factors is not None and not isinstance(factors, Mapping):
            raise InvalidRequest(f"factors must be a mapping, got {type(factors).__name__}")
        if factors is not None:
            _json_value("factors", factors)
        personal: dict[str, Any] = {"text": text}
        if factors is not None:
            personal["factors"] = dict(factors)
        with self._exclusive():
            on_time = self._now() <= self.request(request_id).due
            request = self._step(request_id, "answered", by=by, extra={"on_time": on_time}, personal=personal)
        log.info("explanation_answered", request_id=request_id, on_time=on_time, automated=by == "explainer")
        return request

    def reject(self, request_id: str, reason: str, *, by: str) -> Request:
        """Reject a request in review, with the reason the person will read."""
        _text("reason", reason)
        with self._exclusive():
            on_time = self._now() <= self.request(request_id).due
            request = self._step(request_id, "rejected", by=by, extra={"on_time": on_time},
                                 personal={"reason": reason})
        log.info("explanation_rejected", request_id=request_id, on_time=on_time)
        return request

    def resolve(self, request_id: str, outcome: str, *, by: str) -> Request:
        """Resolve the complaint about a request, with the outcome the person will read."""
        _text("outcome", outcome)
        with self._exclusive():
            due = self.request(request_id).complaint_due
            on_time = due is None or self._now() <= due
            return self._step(request_id, "resolved", by=by, extra={"on_time": on_time},
                              personal={"outcome": outcome})

    # -- explainers ----------------------------------------------------------------------------

    def register_explainer(self, fn: Explainer) -> Explainer:
        """
        Register the function that answers requests automatically; usable as a decorator.

        The explainer receives the interaction record read from the ledger (its ``personal`` part
        opened) and returns an :class:`Explanation`, or ``None`` to leave the request to people.
        """
        if not callable(fn):
            raise InvalidRequest(f"an explainer must be callable, got {fn!r}")
        self._explainer = fn
        return fn

    @property
    def explainer(self) -> Explainer | None:
        """The registered explainer, or the hub's (``obligations.explainer_function``), or None."""
        if self._explainer is not None:
            return self._explainer
        return getattr(self.obligations, "explainer_function", None)

    def process(self, request_id: str) -> Request:
        """
        Run the explainer on a received request; answer it when the explainer gives an explanation.

        With no explainer, or when it declines (returns ``None``) or fails (the error is logged as
        ``explainer_failed``), the request stays ``received``, in the human queue.

        Raises:
            NotFound: No such request.
        """
        request = self.request(request_id)
        explainer = self.explainer
        if explainer is None or request.state != "received" or request.interaction_id is None:
            return request
        index = self.ledger.find_interaction(request.interaction_id)
        if index is None:
            return request
        try:
            record = self.ledger.read(index)
            explanation = explainer(record)
        except Exception as exc:  # noqa: BLE001 - an explainer's bug must not lose the request: people take it.
            log.error("explainer_failed", request_id=request_id, error=f"{type(exc).__name__}: {exc}")
            return self.request(request_id)
        if explanation is None:
            log.info("explanation_queued", request_id=request_id, reason="explainer_declined")
            return request
        if not isinstance(explanation, Explanation):
            log.error("explainer_failed", request_id=request_id,
                      error=f"returned {type(explanation).__name__}, not Explanation or None")
            return request
        with self._exclusive():
            if self._requests[request_id].state != "received":
                return self._requests[request_id]  # A person took it meanwhile.
            self.start_review(request_id, by="explainer")
            return self.answer(request_id, explanation.text, factors=explanation.factors, by="explainer")

    # -- general complaints --------------------------------------------------------------------

    def complaint(
        self,
        subject: str,
        category: str,
        text: str,
        *,
        work: str | None = None,
        right_holder: str | None = None,
        output_ref: str | None = None,
        contact: str | None = None,
    ) -> Complaint:
        """
        Record a general complaint, an IP complaint (Art. 70(4)) or a report (Art. 32).

        Args:
            subject: Who complains (their id; the texts are sealed under their key).
            category: ``general``, ``ip`` or ``report``.
            text: The complaint.
            work: For ``ip``: the protected work (required).
            right_holder: For ``ip``: who holds the right (required).
            output_ref: For ``ip`` (required) and ``report``: the infringing or unlawful output (an
                interaction id, a URL...).
            contact: How to reach them.

        Raises:
            InvalidRequest: An unknown category, an empty text, or a missing IP field.
        """
        if category not in COMPLAINT_CATEGORIES:
            raise InvalidRequest(f"category must be one of {', '.join(COMPLAINT_CATEGORIES)}, got {category!r}")
        if not isinstance(subject, str) or not subject:
            raise InvalidRequest("subject must be a non-empty string")
        _text("text", text)
        required = category == "ip"
        fields = {
            "work": _text("work", work, required=required),
            "right_holder": _text("right_holder", right_holder, required=required),
            "output_ref": _text("output_ref", output_ref, required=required),
            "contact": _text("contact", contact, required=False),
        }
        personal = {"subject": subject, "text": text, **{k: v for k, v in fields.items() if v is not None}}
        with self._exclusive():
            now = self._now()
            complaint_id = str(uuid7())
            self._subjects[complaint_id] = subject
            self._pseudonyms[complaint_id] = self.ledger.pseudonym(subject)
            clear = {
                "kind": "complaint",
                "complaint_id": complaint_id,
                "category": category,
                "step": "received",
                "at": _ts(now),
                "due": _ts(self._due(now)),
            }
            self._append(self._record(complaint_id, clear, personal))
            found = self._complaints[complaint_id]
        log.info("complaint_received", complaint_id=complaint_id, category=category, due=_ts(found.due))
        return found

    def get_complaint(self, complaint_id: str, subject: str) -> Complaint:
        """The subject's own complaint. Raises NotFound for unknown and foreign ids alike."""
        with self._synced():
            found = self._complaints.get(complaint_id) if isinstance(complaint_id, str) else None
            if found is None or not self._owns(complaint_id, subject):
                raise NotFound(_NO_COMPLAINT)
            return found

    def resolve_complaint(self, complaint_id: str, outcome: str, *, by: str) -> Complaint:
        """Resolve a general complaint. Raises InvalidTransition when it is resolved already."""
        _text("outcome", outcome)
        if not isinstance(by, str) or not by:
            raise InvalidRequest(f"by must be a non-empty string (an operator id), got {by!r}")
        with self._exclusive():
            found = self._complaints.get(complaint_id) if isinstance(complaint_id, str) else None
            if found is None:
                raise NotFound(_NO_COMPLAINT)
            if found.state != "received":
                raise InvalidTransition(f"complaint {complaint_id} is {found.state}; it cannot be resolved again")
            now = self._now()
            clear = {"kind": "complaint", "complaint_id": complaint_id, "category": found.category,
                     "step": "resolved", "at": _ts(now), "by": by, "on_time": now <= found.due}
            self._append(self._record(complaint_id, clear, {"outcome": outcome}))
            return self._complaints[complaint_id]

    def complaints(self) -> list[Complaint]:
        """Every complaint, oldest first (for operators)."""
        with self._synced():
            return sorted(self._complaints.values(), key=lambda c: c.received)  # Stable: ties keep ledger order.

    # -- queues, deadlines, reminders ----------------------------------------------------------

    def open_requests(self) -> list[Request]:
        """Requests that still owe a step, most urgent first (for operators)."""
        with self._synced():
            found = [r for r in self._requests.values() if r.open]
        return sorted(found, key=lambda r: r.current_due or r.due)  # Stable: ties keep ledger order.

    def requests(self) -> list[Request]:
        """Every request, oldest first (for operators and the audit report)."""
        with self._synced():
            return sorted(self._requests.values(), key=lambda r: r.received)  # Stable: ties keep ledger order.

    def overdue(self, now: datetime | None = None) -> list[Request]:
        """Open requests whose current deadline has passed, most overdue first."""
        now = self._now() if now is None else now.astimezone(UTC)
        return [r for r in self.open_requests() if r.current_due is not None and now > r.current_due]

    def remind(self, now: datetime | None = None, *, soon: timedelta = timedelta(days=2)) -> list[tuple[str, Request]]:
        """
        Log a reminder for every open request that is overdue or due within ``soon``.

        Each reminder is a structlog event, ``explanation_overdue`` or ``explanation_due_soon``,
        with ``request_id``, ``state``, ``due`` and ``seconds`` (past due, or left); no personal data.
        Open general complaints get ``complaint_overdue`` / ``complaint_due_soon`` likewise.
        Call it from a periodic task (e.g. hourly).

        Returns:
            The (event, request) pairs logged for requests.
        """
        now = self._now() if now is None else now.astimezone(UTC)
        sent: list[tuple[str, Request]] = []
        for request in self.open_requests():
            due = request.current_due
            if due is None:
                continue
            if now > due:
                event = "explanation_overdue"
                log.warning(event, request_id=request.id, state=request.state, due=_ts(due),
                            seconds=int((now - due).total_seconds()))
            elif due - now <= soon:
                event = "explanation_due_soon"
                log.info(event, request_id=request.id, state=request.state, due=_ts(due),
                         seconds=int((due - now).total_seconds()))
            else:
                continue
            sent.append((event, request))
        for found in self.complaints():
            if found.state != "received":
                continue
            if now > found.due:
                log.warning("complaint_overdue", complaint_id=found.id, category=found.category,
                            due=_ts(found.due), seconds=int((now - found.due).total_seconds()))
            elif found.due - now <= soon:
                log.info("complaint_due_soon", complaint_id=found.id, category=found.category,
                         due=_ts(found.due), seconds=int((found.due - now).total_seconds()))
        return sent

    def on_time_ratio(self, since: datetime | None = None, *, now: datetime | None = None) -> float | None:
        """
        The share of requests decided (answered or rejected) by their deadline, for the audit report.

        Counted: requests received at or after ``since`` that were decided, or whose deadline has
        passed undecided (those count as late). Requests still within their deadline and undecided
        are not counted yet.

        Returns:
            A ratio from 0 to 1, or ``None`` when nothing is counted.
        """
        now = self._now() if now is None else now.astimezone(UTC)
        counted = on_time = 0
        for request in self.requests():
            if since is not None and request.received < since:
                continue
            if request.answered_at is not None:
                counted += 1
                on_time += request.answered_at <= request.due
            elif now > request.due:
                counted += 1
        return on_time / counted if counted else None

    # -- erasure -------------------------------------------------------------------------------

    def erase_subject(self, subject: str) -> int:
        """
        Crypto-shred a subject in the ledger and drop their texts from the desk's memory.

        Their requests keep their ids, states and deadlines; later steps are recorded without texts.

        Returns:
            The index of the ledger's ``subject.erased`` record.
        """
        with self._exclusive():
            index = self.ledger.erase_subject(subject)
            self.forget(subject)
            return index

    def forget(self, subject: str) -> None:
        """Drop a subject's texts from memory only (after the ledger erased them some other way)."""
        with self._lock:
            self._forget_pseudonym(self.ledger.pseudonym(subject))

    def _forget_pseudonym(self, pseudonym: str) -> None:
        with self._lock:
            blank: dict[str, Any] = {"question": None, "contact": None, "answer": None, "factors": None,
                                     "reason": None, "complaint": None, "outcome": None}
            for key, owner in list(self._pseudonyms.items()):
                if owner != pseudonym:
                    continue
                self._subjects.pop(key, None)
                if key in self._requests:
                    self._requests[key] = dataclasses.replace(self._requests[key], **blank)
                if key in self._complaints:
                    self._complaints[key] = dataclasses.replace(
                        self._complaints[key], text=None, contact=None, work=None, right_holder=None,
                        output_ref=None, outcome=None,
                    )

    def __repr__(self) -> str:
        return f"RequestDesk(requests={len(self._requests)}, complaints={len(self._complaints)}, calendar={self.calendar!r})"
