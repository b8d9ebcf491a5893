"""What the request endpoints show of a request or a complaint: the subject's view and the operators'."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiobligations.requests.workflow import Complaint, Request, Step

__all__ = ["complaint_view", "iso", "operator_request_view", "request_view"]


def iso(moment: datetime | None) -> str | None:
    """An RFC 3339 UTC time with ``Z``, or ``None``."""
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


def request_view(request: Request) -> dict[str, Any]:
    """What a subject sees of their request (step indices and operator ids are for operators)."""
    return {
        "id": request.id,
        "interaction_id": request.interaction_id,
        "status": request.state,
        "received": iso(request.received),
        "due": iso(request.current_due or request.due),
        "answered_at": iso(request.answered_at),
        "answer": request.answer,
        "factors": dict(request.factors) if request.factors else None,
        "reason": request.reason,
        "complaint": request.complaint,
        "outcome": request.outcome,
    }


def _step_view(step: Step) -> dict[str, Any]:
    return {"step": step.step, "at": iso(step.at), "index": step.index, "by": step.by}


def operator_request_view(request: Request) -> dict[str, Any]:
    """What an operator sees of a request: everything, with its steps' ledger indices and ``by``."""
    return {
        **request_view(request),
        "question": request.question,
        "contact": request.contact,
        "automated": request.automated,
        "open": request.open,
        "request_due": iso(request.due),
        "complained_at": iso(request.complained_at),
        "complaint_due": iso(request.complaint_due),
        "resolved_at": iso(request.resolved_at),
        "history": [_step_view(step) for step in request.history],
    }


def complaint_view(complaint: Complaint) -> dict[str, Any]:
    """What an operator sees of a general complaint, an IP complaint or a report."""
    return {
        "id": complaint.id,
        "category": complaint.category,
        "status": complaint.state,
        "received": iso(complaint.received),
        "due": iso(complaint.due),
        "text": complaint.text,
        "contact": complaint.contact,
        "work": complaint.work,
        "right_holder": complaint.right_holder,
        "output_ref": complaint.output_ref,
        "outcome": complaint.outcome,
        "resolved_at": iso(complaint.resolved_at),
        "history": [_step_view(step) for step in complaint.history],
    }
