"""An OpenAPI 3.1 description of the endpoints the middleware serves itself (Art. 38 and 39).

It mirrors :mod:`middleware.requests` (explanations and complaints, and the operators' side of the
request desk under ``{prefix}/operator/``, authorised by an operator token) and :mod:`middleware.endpoints`
(receipts, the transparency document and page, the checkpoint, security.txt): the request bodies
with their required fields, types and lengths, the responses each route can give, and the one
error shape, ``{"error": {"code": ..., "message": ...}}``.

The subject of a request is whoever the ``Authorization`` header names (any credential; the
middleware keeps only a digest of it), or the app's identity hook, or the first-party cookie. It is
described here as a bearer token: the subject's own API key.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import copy
from typing import Any

from aiobligations.requests.workflow import COMPLAINT_CATEGORIES

from .requests import MAX_BODY

__all__ = ["openapi_document"]

MAX_TEXT = 20_000
"""The longest text the request desk accepts (``aiobligations.requests.workflow._MAX_TEXT``)."""

MAX_INTERACTION_ID = 200
"""Longer interaction ids are never found (404)."""

_STATES = ["received", "in_review", "answered", "rejected", "complained", "resolved"]

_ERROR_REF = {"$ref": "#/components/schemas/Error"}


def _text(description: str, *, max_length: int = MAX_TEXT) -> dict[str, Any]:
    # Non-empty and not only whitespace: the endpoints answer 422 otherwise.
    return {"type": "string", "minLength": 1, "maxLength": max_length, "pattern": r"\S",
            "description": description}


def _optional(schema: dict[str, Any]) -> dict[str, Any]:
    out = dict(schema)
    out["type"] = ["string", "null"]
    out["description"] = schema["description"] + " Optional; null means not given."
    return out


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_REF}}}


def _nullable_time(description: str) -> dict[str, Any]:
    return {"type": ["string", "null"], "format": "date-time", "description": description}


def _components() -> dict[str, Any]:
    return {
        "securitySchemes": {
            "subjectKey": {
                "type": "http",
                "scheme": "bearer",
                "description": "The subject's own API key (the same credential the AI calls carry). "
                               "The middleware names the subject by a digest of it; it is never stored.",
            },
            "operatorToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "An operator's token, one of those listed (as SHA-256 digests) in the "
                               "AIOBLIGATIONS_OPERATOR_TOKENS environment variable. Each step an operator "
                               "takes is recorded with the operator id the token maps to.",
            },
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": {"type": "string", "description": "A stable, machine-readable code.",
                                     "examples": ["not_found", "invalid_request", "invalid_json"]},
                            "message": {"type": "string", "description": "A sentence for people."},
                        },
                    },
                },
            },
            "ExplanationAsk": {
                "type": "object",
                "required": ["interaction_id", "question"],
                "properties": {
                    "interaction_id": _text("The id from the AI response's AI-Interaction-Id header.",
                                            max_length=MAX_INTERACTION_ID),
                    "question": _text("What the person wants explained."),
                    "contact": _optional(_text("How to reach the person.")),
                },
            },
            "ComplaintText": {
                "type": "object",
                "required": ["text"],
                "properties": {"text": _text("Why the answer or rejection does not satisfy the person.")},
            },
            "Complaint": {
                "type": "object",
                "required": ["category", "text"],
                "properties": {
                    "category": {"type": "string", "enum": list(COMPLAINT_CATEGORIES),
                                 "description": "general, ip (Art. 70(4)) or report of unlawful content (Art. 32)."},
                    "text": _text("The complaint."),
                    "work": _optional(_text("For ip (required there): the protected work.")),
                    "right_holder": _optional(_text("For ip (required there): who holds the right.")),
                    "output_ref": _optional(_text("For ip (required there) and report: the output "
                                                  "concerned (an interaction id, a URL…).")),
                    "contact": _optional(_text("How to reach the person.")),
                },
                "if": {"properties": {"category": {"const": "ip"}}, "required": ["category"]},
                "then": {
                    "required": ["work", "right_holder", "output_ref"],
                    "properties": {"work": {"type": "string"}, "right_holder": {"type": "string"},
                                   "output_ref": {"type": "string"}},
                },
            },
            "Received": {
                "type": "object",
                "required": ["id", "status", "due"],
                "properties": {
                    "id": {"type": "string", "format": "uuid"},
                    "status": {"type": "string", "const": "received"},
                    "due": {"type": "string", "format": "date-time",
                            "description": "The deadline, in working days under the provider's calendar."},
                },
            },
            "Request": {
                "type": "object",
                "description": "What the subject sees of their explanation request.",
                "required": ["id", "interaction_id", "status", "received", "due", "answered_at", "answer",
                             "factors", "reason", "complaint", "outcome"],
                "properties": {
                    "id": {"type": "string"},
                    "interaction_id": {"type": ["string", "null"]},
                    "status": {"type": "string", "enum": _STATES},
                    "received": {"type": "string", "format": "date-time"},
                    "due": _nullable_time("The deadline the provider works to now; null once it owes nothing."),
                    "answered_at": _nullable_time("When it was answered or rejected."),
                    "answer": {"type": ["string", "null"]},
                    "factors": {"type": ["object", "null"], "description": "Structured factors behind the answer."},
                    "reason": {"type": ["string", "null"], "description": "Why it was rejected."},
                    "complaint": {"type": ["string", "null"]},
                    "outcome": {"type": ["string", "null"], "description": "How the complaint was resolved."},
                },
            },
            "OperatorRequest": {
                "type": "object",
                "description": "What an operator sees of an explanation request: the subject's view, the "
                               "question and contact, and every step with its ledger index and operator.",
                "required": ["id", "status", "question", "open", "history"],
                "properties": {
                    "id": {"type": "string"},
                    "interaction_id": {"type": ["string", "null"]},
                    "status": {"type": "string", "enum": _STATES},
                    "question": {"type": ["string", "null"]},
                    "contact": {"type": ["string", "null"]},
                    "automated": {"type": "boolean", "description": "Whether the app's explainer answered it."},
                    "open": {"type": "boolean", "description": "Whether the provider still owes a step."},
                    "due": _nullable_time("The deadline the provider works to now."),
                    "request_due": _nullable_time("The request's own deadline."),
                    "complaint_due": _nullable_time("The complaint's deadline, once complained."),
                    "history": {"type": "array", "items": {"$ref": "#/components/schemas/Step"}},
                },
            },
            "OperatorComplaint": {
                "type": "object",
                "description": "What an operator sees of a general complaint, an IP complaint or a report.",
                "required": ["id", "category", "status", "received", "due", "text", "history"],
                "properties": {
                    "id": {"type": "string"},
                    "category": {"type": "string", "enum": list(COMPLAINT_CATEGORIES)},
                    "status": {"type": "string", "enum": ["received", "resolved"]},
                    "received": {"type": "string", "format": "date-time"},
                    "due": _nullable_time("The deadline."),
                    "text": {"type": ["string", "null"]},
                    "outcome": {"type": ["string", "null"]},
                    "history": {"type": "array", "items": {"$ref": "#/components/schemas/Step"}},
                },
            },
            "Step": {
                "type": "object",
                "required": ["step", "at", "index", "by"],
                "properties": {
                    "step": {"type": "string"},
                    "at": {"type": "string", "format": "date-time"},
                    "index": {"type": ["integer", "null"], "description": "The step's record in the ledger."},
                    "by": {"type": ["string", "null"], "description": "The operator id, for operators' steps."},
                },
            },
            "TerminationBody": {
                "type": "object", "required": ["action"],
                "properties": {
                    "action": {"type": "string", "enum": ["plan", "cancel", "run"]},
                    "end": {"type": "string", "format": "date", "description": "With plan: the service's last day."},
                    "early": {"type": "boolean", "description": "With run: delete before the deadline."},
                },
            },
            "Termination": {
                "type": "object", "required": ["plan", "ended", "earliest_end"],
                "properties": {
                    "plan": {"type": ["object", "null"], "properties": {
                        "end": {"type": "string", "format": "date"},
                        "announced": {"type": "string", "format": "date"},
                        "delete_by": {"type": "string", "format": "date"},
                        "shredded": {"type": ["integer", "null"]}}},
                    "ended": {"type": "boolean"},
                    "earliest_end": {"type": "string", "format": "date",
                                     "description": "The first day a plan made today may end on."},
                    "changed": {"type": "boolean"},
                    "shredded": {"type": ["integer", "null"]},
                },
            },
            "AnswerBody": {
                "type": "object",
                "required": ["text"],
                "properties": {
                    "text": _text("The explanation."),
                    "factors": {"type": ["object", "null"], "description": "Structured factors behind the "
                                "decision (finite numbers, strings, lists and objects)."},
                },
            },
            "RejectBody": {"type": "object", "required": ["reason"],
                           "properties": {"reason": _text("Why the request is rejected.")}},
            "OutcomeBody": {"type": "object", "required": ["outcome"],
                            "properties": {"outcome": _text("How the complaint was resolved.")}},
            "Transparency": {
                "type": "object",
                "description": "The provider's transparency document (Art. 38), from its profile.",
                "required": ["provider", "service", "disclosure", "ledger", "version"],
                "properties": {
                    "provider": {"type": "object"},
                    "service": {"type": "object"},
                    "disclosure": {"type": "object"},
                    "ledger": {
                        "type": "object",
                        "required": ["origin", "verifier_key", "checkpoint_url"],
                        "properties": {"origin": {"type": "string"}, "verifier_key": {"type": "string"},
                                       "checkpoint_url": {"type": "string"}},
                    },
                    "version": {"type": "string"},
                },
            },
        },
    }


def _json_body(ref: str) -> dict[str, Any]:
    return {
        "required": True,
        "description": f"A JSON object, at most {MAX_BODY} bytes (larger bodies get 413).",
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


def _json_ok(ref: str, description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


_BAD_BODY = _error("The body is not a JSON object (invalid_json), or it did not arrive (disconnected).")
_TOO_LARGE = _error(f"The body is larger than {MAX_BODY} bytes (payload_too_large).")
_WRONG_METHOD = _error("Another method is used on this path (method_not_allowed).")
_INVALID = _error("A field is missing, empty, not a string, too long, or not allowed (invalid_request).")
_NOT_FOUND = _error("No such request or interaction of yours, or no identity: the same 404 (not_found), "
                    "so ids cannot be probed.")
_WRONG_TYPE = _error("The body is not sent as Content-Type: application/json, with at most a UTF-8 charset "
                     "(unsupported_media_type).")
_RATE_LIMITED = {
    **_error("Too many POSTs from this subject or client address, or to the whole service (rate_limited); "
             "retry later."),
    "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer", "minimum": 1}}},
}
_TEXT = {"text/plain; charset=utf-8": {"schema": {"type": "string"}}}


def _operator_paths(prefix: str) -> dict[str, Any]:
    """The request desk's operator endpoints (``{prefix}/operator/…``)."""
    operator: list[dict[str, list[str]]] = [{"operatorToken": []}]
    auth = {"401": _error("No operator token (unauthorized)."),
            "403": _error("The token is not an operator's (forbidden)."),
            "405": _WRONG_METHOD}
    every = [{"name": "all", "in": "query", "required": False, "description": "1: every one, not only open ones.",
              "schema": {"type": "string", "enum": ["0", "1", "true", "false", "yes", "no"]}}]
    request_id = [{"name": "request_id", "in": "path", "required": True,
                   "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"}}]

    def listing(key: str, ref: str, summary: str, operation: str) -> dict[str, Any]:
        schema = {"type": "object", "required": [key],
                  "properties": {key: {"type": "array", "items": {"$ref": f"#/components/schemas/{ref}"}}}}
        return {"get": {"operationId": operation, "summary": summary, "security": operator, "parameters": every,
                        "responses": {"200": {"description": summary, "content": {"application/json": {
                            "schema": schema}}}, **auth}}}

    def step(operation: str, summary: str, body: str | None, result: str) -> dict[str, Any]:
        post: dict[str, Any] = {"operationId": operation, "summary": summary, "security": operator,
                                "responses": {"200": _json_ok(result, "After the step."), **auth,
                                              "400": _BAD_BODY, "404": _error("No such id (not_found)."),
                                              "409": _error("Not allowed in its state (invalid_transition)."),
                                              "413": _TOO_LARGE, "415": _WRONG_TYPE, "422": _INVALID}}
        if body is not None:
            post["requestBody"] = _json_body(body)
        return {"parameters": request_id, "post": post}

    base = f"{prefix}/operator"
    return {
        f"{base}/requests": listing("requests", "OperatorRequest", "Open explanation requests, most urgent "
                                    "first (every one with all=1).", "listRequests"),
        f"{base}/requests/{{request_id}}": {
            "parameters": request_id,
            "get": {"operationId": "readRequest", "summary": "One explanation request, as operators see it.",
                    "security": operator,
                    "responses": {"200": _json_ok("OperatorRequest", "The request."), **auth,
                                  "404": _error("No such request (not_found).")}},
        },
        f"{base}/requests/{{request_id}}/review": step("reviewRequest", "Start reviewing a request (no body).",
                                                       None, "OperatorRequest"),
        f"{base}/requests/{{request_id}}/answer": step("answerRequest", "Answer a request (Art. 39).",
                                                       "AnswerBody", "OperatorRequest"),
        f"{base}/requests/{{request_id}}/reject": step("rejectRequest", "Reject a request, with the reason.",
                                                       "RejectBody", "OperatorRequest"),
        f"{base}/requests/{{request_id}}/resolve": step("resolveRequestComplaint", "Resolve the complaint "
                                                        "about an answer.", "OutcomeBody", "OperatorRequest"),
        f"{base}/complaints": listing("complaints", "OperatorComplaint", "Open complaints (every one with "
                                      "all=1).", "listComplaints"),
        f"{base}/complaints/{{request_id}}/resolve": step("resolveComplaint", "Resolve a complaint, an IP "
                                                          "complaint or a report.", "OutcomeBody",
                                                          "OperatorComplaint"),
    }


def _control_schemas() -> dict[str, Any]:
    """The schemas of the controls' endpoints (incidents, the takeover switch)."""
    text = {"type": "string"}
    maybe = {"type": ["string", "null"]}
    time = {"type": "string", "format": "date-time"}
    incident_properties = {
        "id": {"type": "string", "pattern": "^INC-[0-9]{8}-[0-9A-F]{6}$"},
        "status": {"type": "string", "enum": ["open", "closed"]},
        "title": text, "scope": text, "course": maybe, "measures": text, "user_actions": text, "contact": text,
        "severity": maybe, "suspend": {"type": "boolean"}, "opened": time, "updated": time,
        "closed": _nullable_time("When it was closed."), "resolution": maybe,
        "history": {"type": "array", "items": {
            "type": "object", "required": ["step", "at", "index", "by", "changed"],
            "properties": {"step": {"type": "string", "enum": ["open", "update", "close"]}, "at": time,
                           "index": {"type": "integer"}, "by": maybe,
                           "changed": {"type": "array", "items": text}}}},
        "url": {"type": "string", "description": "The public user notice."},
    }
    fields = {
        "title": _text("A short title users will read.", max_length=200),
        "scope": _text("Who and what is affected (Art. 37(3) 一).", max_length=5_000),
        "course": _text("The course of events so far (一).", max_length=5_000),
        "measures": _text("The remedial measures taken (二).", max_length=5_000),
        "user_actions": _text("What users can do to reduce harm (二).", max_length=5_000),
        "contact": _text("How to reach the provider (三).", max_length=5_000),
        "severity": _text("A severity label.", max_length=5_000),
        "suspend": {"type": "boolean", "description": "Halt every AI route while the incident is open."},
    }
    takeover = {"type": "object", "required": ["route", "reason", "fallback", "by", "at", "index"],
                "properties": {"route": maybe, "reason": text, "fallback": maybe, "by": maybe, "at": time,
                               "index": {"type": "integer"}}}
    status = {
        "takeovers": {"type": "array", "items": takeover},
        "suspending_incidents": {"type": "array", "items": text},
        "halting": {"type": "boolean", "description": "Whether some AI requests are halted now."},
    }
    notice = {"type": "object", "required": ["id", "lang", "sections", "notice"],
              "properties": {"id": text, "lang": {"type": "string", "enum": ["zh", "en"]}, "notice": text,
                             "sections": {"type": "array", "items": {
                                 "type": "object", "required": ["element", "heading", "text"],
                                 "properties": {"element": text, "heading": text, "text": text}}}}}
    return {
        "Incident": {"type": "object", "required": list(incident_properties), "properties": incident_properties},
        "IncidentDetail": {
            "allOf": [{"$ref": "#/components/schemas/Incident"}, {
                "type": "object", "required": ["notices"],
                "properties": {"notices": {"type": "object", "required": ["user", "authority"], "properties": {
                    "user": {"type": "object", "required": ["zh", "en"]},
                    "authority": {"type": "object", "required": ["zh", "en"]}}}}}],
        },
        "IncidentOpen": {"type": "object", "additionalProperties": False,
                         "required": ["title", "scope", "measures", "user_actions", "contact"],
                         "properties": fields},
        "IncidentStepBody": {
            "type": "object", "additionalProperties": False,
            "description": 'step "update" (the default) with the fields that change, or "close" with the resolution.',
            "properties": {"step": {"type": "string", "enum": ["update", "close"]},
                           "resolution": _text("How it was resolved (close only).", max_length=5_000),
                           **fields},
        },
        "TakeoverBody": {
            "type": "object", "additionalProperties": False, "required": ["state"],
            "properties": {
                "state": {"type": "string", "enum": ["on", "off"]},
                "route": {"type": "string", "pattern": "^/", "maxLength": 500,
                          "description": "A glob of AI paths; absent: every AI route."},
                "reason": {"type": "string", "maxLength": 5_000},
                "fallback": {"type": "string", "pattern": "^/", "maxLength": 500,
                             "description": "state on only: the app path that gets the requests instead."},
            },
        },
        "TakeoverStatus": {"type": "object", "required": list(status), "properties": status},
        "TakeoverChange": {"type": "object", "required": ["changed", *status],
                           "properties": {"changed": {"type": "boolean", "description": "false: nothing "
                                                      "changed, nothing recorded."}, **status}},
        "IncidentNotice": {"type": "object", "required": ["id", "status", "url", "zh", "en"],
                           "properties": {"id": text, "status": {"type": "string", "enum": ["open", "closed"]},
                                          "url": text, "zh": notice, "en": notice}},
    }


def _control_paths(prefix: str) -> dict[str, Any]:
    """The controls' endpoints: incidents (Art. 37), the takeover switch (Art. 52(4)) and termination (Art. 50)."""
    operator: list[dict[str, list[str]]] = [{"operatorToken": []}]
    auth = {"401": _error("No operator token (unauthorized)."),
            "403": _error("The token is not an operator's (forbidden)."),
            "405": _WRONG_METHOD}
    writes = {"400": _BAD_BODY, "413": _TOO_LARGE, "415": _WRONG_TYPE, "422": _INVALID,
              "503": _error("The ledger cannot record it now (evidence_unavailable); retry later.")}
    incident_id = [{"name": "incident_id", "in": "path", "required": True,
                    "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"}}]
    missing = _error("No such incident (not_found).")
    base = f"{prefix}/operator"
    return {
        f"{base}/incidents": {
            "get": {"operationId": "listIncidents", "summary": "Open incidents, oldest first (every one with all=1).",
                    "security": operator,
                    "parameters": [{"name": "all", "in": "query", "required": False,
                                    "schema": {"type": "string", "enum": ["0", "1", "true", "false", "yes", "no"]}}],
                    "responses": {"200": {"description": "The incidents.", "content": {"application/json": {
                        "schema": {"type": "object", "required": ["incidents"], "properties": {"incidents": {
                            "type": "array", "items": {"$ref": "#/components/schemas/Incident"}}}}}}}, **auth}},
            "post": {"operationId": "openIncident", "summary": "Open a security incident (Art. 37).",
                     "security": operator, "requestBody": _json_body("IncidentOpen"),
                     "responses": {"201": _json_ok("Incident", "The open incident."),
                                   "200": _json_ok("Incident", "The same incident was open already (a retry): "
                                                   "nothing recorded."), **auth, **writes}},
        },
        f"{base}/incidents/{{incident_id}}": {
            "parameters": incident_id,
            "get": {"operationId": "readIncident", "summary": "An incident, its steps and its notices (zh, en).",
                    "security": operator,
                    "responses": {"200": _json_ok("IncidentDetail", "The incident."), **auth, "404": missing}},
            "post": {"operationId": "stepIncident", "summary": "Update an open incident, or close it.",
                     "security": operator, "requestBody": _json_body("IncidentStepBody"),
                     "responses": {"200": _json_ok("Incident", "After the step."), **auth, **writes,
                                   "404": missing, "409": _error("The incident is closed (incident_closed).")}},
        },
        f"{base}/takeover": {
            "get": {"operationId": "takeoverStatus", "summary": "The takeover switches that are on (Art. 52(4)).",
                    "security": operator,
                    "responses": {"200": _json_ok("TakeoverStatus", "The switches."), **auth}},
            "post": {"operationId": "switchTakeover", "summary": "Take AI routes over, or end it; idempotent.",
                     "security": operator, "requestBody": _json_body("TakeoverBody"),
                     "responses": {"200": _json_ok("TakeoverChange", "The switches now."), **auth, **writes}},
        },
        f"{base}/termination": {
            "get": {"operationId": "terminationStatus", "summary": "The termination plan, if any (Art. 50).",
                    "security": operator,
                    "responses": {"200": _json_ok("Termination", "The plan (null when none stands)."), **auth}},
            "post": {"operationId": "terminationStep",
                     "summary": "Plan the service's end (30 working days' notice), cancel it before the end, or "
                                "run the deletion of every subject's personal data once it is due.",
                     "security": operator, "requestBody": _json_body("TerminationBody"),
                     "responses": {"200": _json_ok("Termination", "The plan after the step."), **auth, **writes,
                                   "409": _error("Not allowed now: too little notice, another plan stands, the "
                                                 "end has passed, or the deletion is not due (not_allowed).")}},
        },
        f"{prefix}/incidents/{{incident_id}}": {
            "parameters": incident_id,
            "get": {"operationId": "incidentNotice",
                    "summary": "An incident's notice for users (Art. 37): HTML (?lang=zh|en or Accept-Language), "
                               "or JSON in both languages when Accept asks for application/json.",
                    "security": [],
                    "responses": {"200": {"description": "The notice.", "content": {
                        "text/html; charset=utf-8": {"schema": {"type": "string"}},
                        "application/json": {"schema": {"$ref": "#/components/schemas/IncidentNotice"}}}},
                        "404": missing, "405": _WRONG_METHOD}},
        },
    }


def openapi_document(prefix: str = "/ai") -> dict[str, Any]:
    """The OpenAPI 3.1 document of the middleware's own endpoints under ``prefix``.

    Args:
        prefix: Where the ``/ai`` endpoints live (the middleware's ``prefix``).

    Returns:
        A fresh ``dict`` (JSON-serialisable) each call.
    """
    prefix = "/" + prefix.strip("/")
    subject: list[dict[str, list[str]]] = [{"subjectKey": []}]
    paths: dict[str, Any] = {
        f"{prefix}/explanations": {
            "post": {
                "operationId": "askExplanation",
                "summary": "Ask for an explanation of one of your interactions (Art. 39).",
                "security": subject,
                "requestBody": _json_body("ExplanationAsk"),
                "responses": {
                    "201": _json_ok("Received", "The request is recorded; it is answered by the deadline."),
                    "400": _BAD_BODY,
                    "404": _NOT_FOUND,
                    "405": _WRONG_METHOD,
                    "413": _TOO_LARGE,
                    "415": _WRONG_TYPE,
                    "422": _INVALID,
                    "429": _RATE_LIMITED,
                },
            },
        },
        f"{prefix}/explanations/{{request_id}}": {
            "parameters": [{"name": "request_id", "in": "path", "required": True,
                            "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"}}],
            "get": {
                "operationId": "readExplanation",
                "summary": "Read your explanation request: its state, deadline, answer.",
                "security": subject,
                "responses": {
                    "200": _json_ok("Request", "Your request."),
                    "404": _NOT_FOUND,
                    "405": _WRONG_METHOD,
                },
            },
        },
        f"{prefix}/explanations/{{request_id}}/complaints": {
            "parameters": [{"name": "request_id", "in": "path", "required": True,
                            "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"}}],
            "post": {
                "operationId": "complainAboutExplanation",
                "summary": "Complain about the answer or rejection of your request; it gets its own deadline.",
                "security": subject,
                "requestBody": _json_body("ComplaintText"),
                "responses": {
                    "200": _json_ok("Request", "Your request, now complained."),
                    "400": _BAD_BODY,
                    "404": _NOT_FOUND,
                    "405": _WRONG_METHOD,
                    "409": _error("The request is not answered or rejected, or was complained about "
                                  "already (invalid_transition)."),
                    "413": _TOO_LARGE,
                    "415": _WRONG_TYPE,
                    "422": _INVALID,
                    "429": _RATE_LIMITED,
                },
            },
        },
        f"{prefix}/complaints": {
            "post": {
                "operationId": "complain",
                "summary": "A general complaint, an IP complaint (Art. 70(4)) or a report (Art. 32).",
                "description": "Without an identity the complaint is recorded as anonymous.",
                "security": [*subject, {}],
                "requestBody": _json_body("Complaint"),
                "responses": {
                    "201": _json_ok("Received", "The complaint is recorded."),
                    "400": _BAD_BODY,
                    "405": _WRONG_METHOD,
                    "413": _TOO_LARGE,
                    "415": _WRONG_TYPE,
                    "422": _INVALID,
                    "429": _RATE_LIMITED,
                },
            },
        },
        f"{prefix}/receipts/{{interaction_id}}": {
            "parameters": [{"name": "interaction_id", "in": "path", "required": True,
                            "schema": {"type": "string", "format": "uuid"}}],
            "get": {
                "operationId": "readReceipt",
                "summary": "Your receipt for one of your interactions: a C2SP tlog-proof, checkable offline.",
                "security": subject,
                "responses": {
                    "200": {"description": "The receipt (verify it with `aiobligations verify-receipt`).",
                            "content": _TEXT},
                    "404": _error("No such interaction of yours, or not sequenced yet, or its record does not "
                                  "read as that interaction (not_found)."),
                    "405": _WRONG_METHOD,
                    "409": _error("Your interaction's evidence failed verification: its record or the tree above "
                                  "it was altered (evidence_unverifiable). The provider is alerted."),
                    "503": _error("The ledger cannot answer now (evidence_unavailable); retry later."),
                },
            },
        },
        **_operator_paths(prefix),
        **_control_paths(prefix),
        "/.well-known/ai-transparency": {
            "get": {
                "operationId": "transparency",
                "summary": "The transparency document (Art. 38) as JSON.",
                "security": [],
                "responses": {"200": _json_ok("Transparency", "The document."), "405": _WRONG_METHOD},
            },
        },
        f"{prefix}/transparency": {
            "get": {
                "operationId": "transparencyPage",
                "summary": "The transparency page, in the language asked for (?lang=zh|en or Accept-Language).",
                "security": [],
                "parameters": [{"name": "lang", "in": "query", "required": False,
                                "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "The page.",
                            "content": {"text/html; charset=utf-8": {"schema": {"type": "string"}}}},
                    "405": _WRONG_METHOD,
                },
            },
        },
        f"{prefix}/checkpoint": {
            "get": {
                "operationId": "checkpoint",
                "summary": "The ledger's latest checkpoint (a C2SP signed note); with witnesses, the latest one "
                           "they cosigned, their cosignature lines appended.",
                "security": [],
                "responses": {
                    "200": {"description": "The checkpoint.", "content": _TEXT},
                    "404": _error("No checkpoint signed yet (no_checkpoint)."),
                    "405": _WRONG_METHOD,
                },
            },
        },
        f"{prefix}/health": {
            "get": {
                "operationId": "health",
                "summary": "Whether the ledger takes records now (a readiness probe).",
                "security": [],
                "responses": {
                    "200": {"description": "The ledger takes records. Once a request has met evidence that "
                                           "does not verify (an altered row), it also says so: run "
                                           "`aiobligations verify`.",
                            "content": {"application/json": {"schema": {
                                "type": "object", "required": ["ledger"],
                                "properties": {"ledger": {"const": "accepting"},
                                               "evidence": {"const": "break_detected"},
                                               "breaks": {"type": "integer", "minimum": 1}}}}}},
                    "503": _error("The ledger cannot take records now: its database is unreachable, or its "
                                  "queue is full (evidence_unavailable)."),
                    "405": _WRONG_METHOD,
                },
            },
        },
        "/.well-known/security.txt": {
            "get": {
                "operationId": "securityTxt",
                "summary": "Where to report security vulnerabilities (RFC 9116).",
                "security": [],
                "responses": {"200": {"description": "security.txt", "content": _TEXT}, "405": _WRONG_METHOD},
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "aiobligations: the provider's own endpoints",
            "version": "0.1.0",
            "description": "Explanations (Art. 39), complaints (Art. 70(4), Art. 32), receipts, "
                           "the transparency document (Art. 38), the ledger's checkpoint, security "
                           "incidents (Art. 37) and the takeover switch (Art. 52(4)). Every "
                           "error is `{\"error\": {\"code\", \"message\"}}`.",
        },
        "security": subject,
        "paths": paths,
        "components": _with_control_schemas(copy.deepcopy(_components())),
    }


def _with_control_schemas(components: dict[str, Any]) -> dict[str, Any]:
    components["schemas"].update(_control_schemas())
    return components
