"""HTML pages for people to ask for an explanation (Art. 39) and follow their request, in zh and en.

``GET {prefix}/requests`` shows a form (interaction id, question, optional contact). Submitting it
(``POST``, ``application/x-www-form-urlencoded``, at most :data:`MAX_FORM_BODY` bytes) records the
request with the desk and answers ``303 See Other`` to ``{prefix}/requests/{id}``, which shows the
request's status, its due date in Beijing time, the answer once there is one, and, once it is
answered or rejected, a form to complain about it (``POST {prefix}/requests/{id}/complaint``, 303
back). The pages use no JavaScript and no resources from elsewhere; every value is HTML-escaped.

Like the JSON endpoints, only the subject of an interaction may ask about it or see the request,
the subject comes from the request's identity (``subject_of``), never from the form, and an unknown
id and someone else's id get the same 404. Cross-site form posts are refused: a POST must be
urlencoded and, when the browser says where it comes from (``Sec-Fetch-Site``, ``Origin`` or
``Referer``), come from this same host.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from urllib.parse import parse_qs, parse_qsl, quote, urlsplit
from zoneinfo import ZoneInfo

from aiobligations.disclosure.page import negotiate_language
from aiobligations.errors import LedgerBroken
from aiobligations.requests.workflow import InvalidRequest, InvalidTransition, NotFound, Request, RequestDesk

from .types import Receive, Scope, Send


__all__ = ["MAX_FORM_BODY", "RequestPages", "beijing_time"]


MAX_FORM_BODY = 16 << 10
"""The largest form body these pages read; larger ones get 413."""

BEIJING = ZoneInfo("Asia/Shanghai")
_ID = re.compile(r"^[0-9A-Za-z-]{1,64}$")
_FIELDS = {"interaction_id": 200, "question": 4000, "contact": 320}
_COMPLAINT_MAX = 4000
_WEEKDAYS_ZH = "一二三四五六日"

_WORDS: dict[str, dict[str, str]] = {
    "zh": {
        "html_lang": "zh-CN", "switch": "English", "switch_lang": "en", "language": "语言",
        "form_title": "要求解释人工智能的决定",
        "form_intro": "如果本服务的人工智能作出的回答或决定影响了您，您可以要求我们解释。"
                      "我们会在规定期限内答复。",
        "legend": "您的请求",
        "interaction_id": "交互编号",
        "interaction_id_help": "在人工智能回答的下方或通知中可以找到，例如 0191f7c2-…。",
        "question": "您想了解什么？",
        "question_help": "请用自己的话写下您的问题，例如“为什么拒绝了我的申请？”",
        "contact": "联系方式（选填）",
        "contact_help": "电子邮件或电话。不填也可以，您可以随时回到本页查看进度。",
        "submit": "提交请求",
        "status_title": "您的解释请求",
        "status_intro": "请保存本页地址，以便以后查看处理进度。",
        "request_id": "请求编号", "status": "状态", "received": "收到时间", "due": "答复期限",
        "answered_at": "答复时间", "your_question": "您的问题", "answer": "我们的解释",
        "factors": "决定所依据的因素", "reason": "拒绝的理由", "your_complaint": "您的投诉",
        "outcome": "投诉处理结果",
        "complain_title": "对答复不满意？",
        "complain_help": "请写下您不满意的地方。我们会在规定期限内重新审查并答复。",
        "complaint": "投诉内容", "complain_submit": "提交投诉",
        "new_request": "提出新的请求", "transparency": "人工智能服务透明度说明",
        "error_title": "无法处理您的请求", "back": "返回请求表单",
        "beijing": "北京时间", "colon": "：", "none": "无",
        "received_state": "已收到", "in_review_state": "正在处理", "answered_state": "已答复",
        "rejected_state": "已拒绝", "complained_state": "已收到您的投诉，正在处理", "resolved_state": "投诉已处理",
        "e404": "没有找到这个请求或交互。请检查编号是否正确，并确认您使用的是提出请求时的同一账户或浏览器。",
        "e400": "表单内容无法读取。请返回表单重新填写。",
        "e403": "出于安全原因，只接受从本网站页面提交的表单。请返回表单重新提交。",
        "e405": "此地址不支持这种操作。",
        "e409": "目前不能对这个请求投诉：只有在我们答复或拒绝之后才能投诉，而且每个请求只能投诉一次。",
        "e413": "提交的内容太长。请缩短后再试。",
        "e415": "表单格式不正确。请使用本网站的表单提交。",
        "e429": "目前提交的请求太多。请稍后再试。",
        "e422": "有必填内容没有填写，或内容太长。请检查后重新提交。",
    },
    "en": {
        "html_lang": "en", "switch": "中文", "switch_lang": "zh", "language": "Language",
        "form_title": "Ask for an explanation of an AI decision",
        "form_intro": "If an answer or a decision made by this service's AI affects you, you can ask us to "
                      "explain it. We will answer by the deadline shown after you send the request.",
        "legend": "Your request",
        "interaction_id": "Interaction number",
        "interaction_id_help": "You can find it under the AI's answer or in the notice, for example 0191f7c2-….",
        "question": "What would you like to know?",
        "question_help": "Write your question in your own words, for example “Why was my application refused?”",
        "contact": "How to reach you (optional)",
        "contact_help": "An e-mail address or phone number. You can leave it empty and come back to this "
                        "page to see how your request is going.",
        "submit": "Send request",
        "status_title": "Your request for an explanation",
        "status_intro": "Keep the address of this page to check on your request later.",
        "request_id": "Request number", "status": "Status", "received": "Received", "due": "Answer due by",
        "answered_at": "Answered", "your_question": "Your question", "answer": "Our explanation",
        "factors": "What the decision was based on", "reason": "Why we refused", "your_complaint": "Your complaint",
        "outcome": "Outcome of your complaint",
        "complain_title": "Not satisfied with the answer?",
        "complain_help": "Tell us what is wrong with it. We will look at it again and reply by a new deadline.",
        "complaint": "Your complaint", "complain_submit": "Send complaint",
        "new_request": "Ask about something else", "transparency": "AI service transparency notice",
        "error_title": "We could not handle your request", "back": "Back to the request form",
        "beijing": "Beijing time", "colon": ": ", "none": "none",
        "received_state": "Received", "in_review_state": "Being looked at", "answered_state": "Answered",
        "rejected_state": "Refused", "complained_state": "Complaint received, being looked at",
        "resolved_state": "Complaint dealt with",
        "e404": "We could not find this request or interaction. Check the number, and use the same account "
                "or browser you used before.",
        "e400": "We could not read the form. Please go back and fill it in again.",
        "e403": "For your safety we only accept forms sent from this website's own pages. Please go back "
                "and send it again.",
        "e405": "This address does not support that.",
        "e409": "You cannot complain about this request now: you can complain once we have answered or "
                "refused it, and only once per request.",
        "e413": "What you sent is too long. Please shorten it and try again.",
        "e415": "The form was not in the expected format. Please use the form on this website.",
        "e429": "We are receiving too many requests right now. Please try again in a little while.",
        "e422": "Something required is missing or too long. Please check the form and send it again.",
    },
}

# Contrast on white: text #1a1a1a (17.4:1), links #0b4f9c (8.4:1), help text #4a4a4a (8.9:1),
# the status badge #0b4f9c on #e8f0fb (7.5:1), the error box #8a1c1c on #fdecec (7.9:1).
_STYLE = (
    "body{margin:0;background:#fff;color:#1a1a1a;font:18px/1.6 system-ui,-apple-system,'Segoe UI',"
    "'PingFang SC','Microsoft YaHei',sans-serif}"
    "header,main,footer{max-width:44em;margin:0 auto;padding:1em 1.25em}"
    "header{border-bottom:2px solid #1a1a1a}footer{border-top:1px solid #767676;font-size:0.9em}"
    "h1{font-size:1.6em;line-height:1.3;margin:0.3em 0}h2{font-size:1.25em;margin:1.6em 0 0.4em}"
    "a{color:#0b4f9c;text-decoration:underline}"
    "a:focus,input:focus,textarea:focus,button:focus{outline:3px solid #0b4f9c;outline-offset:2px}"
    "nav{text-align:right}fieldset{border:1px solid #767676;padding:1em;margin:0}legend{font-weight:600}"
    "label{display:block;font-weight:600;margin-top:1em}.help{color:#4a4a4a;margin:0.2em 0 0.4em;font-size:0.9em}"
    "input,textarea{box-sizing:border-box;width:100%;font:inherit;color:#1a1a1a;background:#fff;"
    "border:2px solid #595959;padding:0.4em}textarea{min-height:7em}"
    "button{margin-top:1.2em;font:inherit;font-weight:600;color:#fff;background:#0b4f9c;border:2px solid #0b4f9c;"
    "padding:0.5em 1.4em;cursor:pointer}"
    "dl{display:grid;grid-template-columns:max-content 1fr;gap:0.3em 1em;margin:0}"
    "dt{font-weight:600}dd{margin:0;overflow-wrap:anywhere}code{font-size:0.9em;overflow-wrap:anywhere}"
    ".status{display:inline-block;background:#e8f0fb;color:#0b4f9c;font-weight:700;padding:0.1em 0.6em}"
    ".error{background:#fdecec;color:#8a1c1c;border-left:6px solid #8a1c1c;padding:0.8em 1em}"
    ".text{white-space:pre-wrap;overflow-wrap:anywhere}"
)

_SECURITY_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"content-security-policy",
     (b"default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; "
      b"frame-ancestors 'none'; base-uri 'none'")),
]


class _Failure(Exception):
    def __init__(self, status: int, allow: str | None = None, retry_after: int | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(status)
        self.status, self.allow = status, allow


def beijing_time(moment: datetime, lang: str) -> str:
    """A moment as a person in China reads it, e.g. ``2026年10月12日（星期一）18:00（北京时间）``."""
    local = moment.astimezone(BEIJING)
    if lang == "en":
        return f"{local:%A} {local.day} {local:%B %Y}, {local:%H:%M} (Beijing time)"
    return (f"{local.year}年{local.month}月{local.day}日（星期{_WEEKDAYS_ZH[local.weekday()]}）"
            f"{local:%H:%M}（北京时间）")


class RequestPages:
    """Serves ``{prefix}/requests`` and ``{prefix}/requests/{id}[/complaint]`` as HTML over a desk.

    Args:
        desk: The request desk, or a function returning it (built on first use).
        prefix: Where the ``/ai`` endpoints live (the pages are under ``{prefix}/requests``).
        subject_of: Names the subject of a request, or returns ``None`` when it has no identity.
        language: The language when neither ``?lang=`` nor ``Accept-Language`` decides (``zh``/``en``).
        transparency_url: Linked from every page (default ``{prefix}/transparency``).
        on_break: Called with ``(index, reason)`` when the ledger's evidence does not read (an
            altered row); the page is then the same 404 as for an unknown id.
        limit: Spends the rate limits of a POST that writes to the ledger; returns 0 to go ahead,
            else the seconds to wait (the page is then 429 with ``Retry-After``), e.g.
            :meth:`RequestEndpoints.limit_wait <aiobligations.middleware.requests.RequestEndpoints.limit_wait>`.

    .. versionadded:: 0.1.0
    """

    def __init__(self, desk: RequestDesk | Callable[[], RequestDesk], *, prefix: str,
                 subject_of: Callable[[Scope], str | None], language: str = "zh",
                 transparency_url: str | None = None,
                 on_break: Callable[[int | None, str], None] | None = None,
                 limit: Callable[[Scope, str | None], Awaitable[int]] | None = None) -> None:
        self._on_break = on_break
        self._limit = limit
        prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self._desk = desk
        self.base = f"{prefix}/requests"
        self._subject_of = subject_of
        self.language = "en" if language == "en" else "zh"
        self.transparency_url = transparency_url or f"{prefix}/transparency"

    @property
    def desk(self) -> RequestDesk:
        """The request desk (built on first use when a factory was given)."""
        if not isinstance(self._desk, RequestDesk):
            self._desk = self._desk()
        return self._desk

    @property
    def form_url(self) -> str:
        """Where the form is: link to it from the transparency page."""
        return self.base

    def handles(self, path: str) -> bool:
        """Whether ``path`` is one of these pages."""
        return path == self.base or path.startswith(self.base + "/")

    # -- ASGI --------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route one HTTP request; every failure is a friendly HTML page with a fitting 4xx status."""
        lang, explicit = self._lang(scope)
        headers: list[tuple[bytes, bytes]] = []
        try:
            status, body, location = await self._route(scope, receive, lang, explicit)
        except _Failure as exc:
            status, body, location = exc.status, self._error_page(exc.status, lang, explicit), None
            if exc.allow:
                headers.append((b"allow", exc.allow.encode()))
            if exc.retry_after:
                headers.append((b"retry-after", str(exc.retry_after).encode()))
        except NotFound:
            status, body, location = 404, self._error_page(404, lang, explicit), None
        except InvalidTransition:
            status, body, location = 409, self._error_page(409, lang, explicit), None
        except InvalidRequest:
            status, body, location = 422, self._error_page(422, lang, explicit), None
        except LedgerBroken as exc:  # An altered row: the same 404 as an unknown id; operators are alerted.
            if self._on_break is not None:
                self._on_break(exc.index, exc.reason)
            status, body, location = 404, self._error_page(404, lang, explicit), None
        data = body.encode()
        if location is not None:
            headers.append((b"location", location.encode()))
        headers += [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(data)).encode()),
                    (b"content-language", _WORDS[lang]["html_lang"].encode()), *_SECURITY_HEADERS]
        if not explicit:
            headers.append((b"vary", b"Accept-Language"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else data})

    async def _route(self, scope: Scope, receive: Receive, lang: str,
                     explicit: bool) -> tuple[int, str, str | None]:
        path, method = scope["path"], scope["method"]
        subject = self._subject_of(scope)
        if method == "POST" and self._limit is not None:
            waiting = await self._limit(scope, subject)
            if waiting:
                raise _Failure(429, retry_after=waiting)
        if path == self.base:
            if method in ("GET", "HEAD"):
                query = _query(scope)
                prefill = query.get("interaction_id", [""])[0][: _FIELDS["interaction_id"]]
                return 200, self._form_page(lang, explicit, prefill), None
            _allow(method, "GET, HEAD, POST")
            form = await self._form(scope, receive)
            values = {name: _value(form, name, limit) for name, limit in _FIELDS.items()}
            if not values["interaction_id"] or not values["question"]:
                raise _Failure(422)
            if subject is None:
                raise NotFound("no identity")
            request = await asyncio.to_thread(self.desk.ask, values["interaction_id"], subject,
                                              values["question"], contact=values["contact"] or None)
            # The explainer, if any, answers in the background; the person sees the request at once.
            asyncio.get_running_loop().run_in_executor(None, self._process, request.id)
            return 303, self._redirect_page(lang, self._status_url(request.id, lang, explicit)), \
                self._status_url(request.id, lang, explicit)
        request_id, _, tail = path[len(self.base) + 1 :].partition("/")
        if not _ID.match(request_id) or tail not in ("", "complaint"):
            raise NotFound("no such page")
        if tail == "":
            if method not in ("GET", "HEAD"):
                raise _Failure(405, "GET, HEAD")
            if subject is None:
                raise NotFound("no identity")
            request = await asyncio.to_thread(self.desk.get, request_id, subject)
            return 200, self._status_page(request, lang, explicit), None
        _allow(method, "POST")
        form = await self._form(scope, receive)
        text = _value(form, "text", _COMPLAINT_MAX)
        if not text:
            raise _Failure(422)
        if subject is None:
            raise NotFound("no identity")
        await asyncio.to_thread(self.desk.complain, request_id, subject, text)
        location = self._status_url(request_id, lang, explicit)
        return 303, self._redirect_page(lang, location), location

    def _process(self, request_id: str) -> None:
        # The desk logs explainer failures; the request stays with people.
        with contextlib.suppress(Exception):
            self.desk.process(request_id)

    def _lang(self, scope: Scope) -> tuple[str, bool]:
        query = _query(scope).get("lang", [None])[0]
        accept = None
        for key, value in scope.get("headers", ()):
            if key == b"accept-language":
                accept = value.decode("latin-1")
        lang = negotiate_language(accept, query, self.language)
        explicit = bool(query and query.strip().lower().split("-", 1)[0] in ("zh", "en"))
        return lang, explicit

    def _status_url(self, request_id: str, lang: str, explicit: bool) -> str:
        return f"{self.base}/{quote(request_id, safe='')}" + (f"?lang={lang}" if explicit else "")

    # -- reading forms ---------------------------------------------------------------------------

    async def _form(self, scope: Scope, receive: Receive) -> dict[str, list[str]]:
        headers = {key.lower(): value.decode("latin-1") for key, value in scope.get("headers", ())}
        _same_origin(headers)
        kind, _, params = headers.get(b"content-type", "").partition(";")
        if kind.strip().lower() != "application/x-www-form-urlencoded":
            raise _Failure(415)
        charset = re.search(r"charset\s*=\s*\"?([^\";\s]+)", params, re.IGNORECASE)
        if charset and charset[1].lower() not in ("utf-8", "utf8"):
            raise _Failure(415)
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.strip().isdigit() or int(declared) > MAX_FORM_BODY):
            raise _Failure(413 if declared.strip().isdigit() else 400)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Failure(400)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_FORM_BODY:
                raise _Failure(413)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        try:
            text = b"".join(chunks).decode("ascii")  # Urlencoded bodies are ASCII; UTF-8 comes %-encoded.
            pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), encoding="utf-8",
                              errors="strict", max_num_fields=10)
        except (UnicodeDecodeError, ValueError):
            raise _Failure(400) from None
        form: dict[str, list[str]] = {}
        for name, value in pairs:
            form.setdefault(name, []).append(value)
        return form

    # -- pages -----------------------------------------------------------------------------------

    def _page(self, lang: str, explicit: bool, title: str, main: str, *, here: str) -> str:
        w, e = _WORDS[lang], html.escape
        other = w["switch_lang"]
        return (
            f'<!DOCTYPE html>\n<html lang="{w["html_lang"]}">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            '<meta name="robots" content="noindex">\n'
            f"<title>{e(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            f'<header><nav aria-label="{e(w["language"])}"><a href="{e(here)}?lang={other}" hreflang="{other}" '
            f'lang="{other}">{e(w["switch"])}</a></nav><h1>{e(title)}</h1></header>\n'
            f"<main>{main}</main>\n"
            f'<footer><ul><li><a href="{e(self._with_lang(self.base, lang, explicit))}">{e(w["new_request"])}</a></li>'
            f'<li><a href="{e(self._with_lang(self.transparency_url, lang, explicit))}">{e(w["transparency"])}</a>'
            "</li></ul></footer>\n</body>\n</html>\n"
        )

    @staticmethod
    def _with_lang(url: str, lang: str, explicit: bool) -> str:
        return f"{url}?lang={lang}" if explicit else url

    def _form_page(self, lang: str, explicit: bool, prefill: str = "") -> str:
        w, e = _WORDS[lang], html.escape
        action = e(self._with_lang(self.base, lang, explicit))
        main = (
            f"<p>{e(w['form_intro'])}</p>"
            f'<form method="post" action="{action}" accept-charset="utf-8">'
            f"<fieldset><legend>{e(w['legend'])}</legend>"
            f'<label for="interaction_id">{e(w["interaction_id"])}</label>'
            f'<p class="help" id="interaction_id_help">{e(w["interaction_id_help"])}</p>'
            f'<input id="interaction_id" name="interaction_id" type="text" required autocomplete="off" '
            f'spellcheck="false" maxlength="{_FIELDS["interaction_id"]}" aria-describedby="interaction_id_help" '
            f'value="{e(prefill)}">'
            f'<label for="question">{e(w["question"])}</label>'
            f'<p class="help" id="question_help">{e(w["question_help"])}</p>'
            f'<textarea id="question" name="question" required maxlength="{_FIELDS["question"]}" rows="6" '
            f'aria-describedby="question_help"></textarea>'
            f'<label for="contact">{e(w["contact"])}</label>'
            f'<p class="help" id="contact_help">{e(w["contact_help"])}</p>'
            f'<input id="contact" name="contact" type="text" autocomplete="email" maxlength="{_FIELDS["contact"]}" '
            f'aria-describedby="contact_help">'
            f'</fieldset><button type="submit">{e(w["submit"])}</button></form>'
        )
        return self._page(lang, explicit, w["form_title"], main, here=self.base)

    def _status_page(self, request: Request, lang: str, explicit: bool) -> str:
        w, e = _WORDS[lang], html.escape
        state = w.get(f"{request.state}_state", request.state)

        def fact(label: str, value: str, *, code: bool = False, raw: bool = False) -> str:
            shown = value if raw else (f"<code>{e(value)}</code>" if code else e(value))
            return f"<dt>{e(w[label])}</dt><dd>{shown}</dd>"

        facts = [
            fact("status", f'<strong class="status" id="status" data-state="{e(request.state)}">{e(state)}</strong>',
                 raw=True),
            fact("request_id", request.id, code=True),
        ]
        if request.interaction_id:
            facts.append(fact("interaction_id", request.interaction_id, code=True))
        facts.append(fact("received", beijing_time(request.received, lang)))
        due = request.current_due
        if due is not None:
            facts.append(f'<dt>{e(w["due"])}</dt><dd id="due"><time datetime="{e(due.isoformat())}">'
                         f"{e(beijing_time(due, lang))}</time></dd>")
        if request.answered_at is not None:
            facts.append(fact("answered_at", beijing_time(request.answered_at, lang)))
        sections = [f"<p>{e(w['status_intro'])}</p><dl>{''.join(facts)}</dl>"]

        def section(key: str, text: str | None) -> None:
            if text:
                sections.append(f'<section aria-labelledby="{key}"><h2 id="{key}">{e(w[key])}</h2>'
                                f'<p class="text">{e(text)}</p></section>')

        section("your_question", request.question)
        section("answer", request.answer)
        if request.factors:
            items = "".join(f"<dt>{e(str(k))}</dt><dd>{e(str(v))}</dd>" for k, v in request.factors.items())
            sections.append(f'<section aria-labelledby="factors"><h2 id="factors">{e(w["factors"])}</h2>'
                            f"<dl>{items}</dl></section>")
        section("reason", request.reason)
        section("your_complaint", request.complaint)
        section("outcome", request.outcome)
        if request.state in ("answered", "rejected"):
            action = e(self._with_lang(f"{self.base}/{quote(request.id, safe='')}/complaint", lang, explicit))
            sections.append(
                f'<section aria-labelledby="complain"><h2 id="complain">{e(w["complain_title"])}</h2>'
                f'<form method="post" action="{action}" accept-charset="utf-8">'
                f'<label for="text">{e(w["complaint"])}</label>'
                f'<p class="help" id="text_help">{e(w["complain_help"])}</p>'
                f'<textarea id="text" name="text" required maxlength="{_COMPLAINT_MAX}" rows="5" '
                f'aria-describedby="text_help"></textarea>'
                f'<button type="submit">{e(w["complain_submit"])}</button></form></section>'
            )
        here = f"{self.base}/{quote(request.id, safe='')}"
        return self._page(lang, explicit, w["status_title"], "".join(sections), here=here)

    def _redirect_page(self, lang: str, location: str) -> str:
        e = html.escape
        return self._page(lang, True, _WORDS[lang]["status_title"],
                          f'<p><a href="{e(location)}">{e(_WORDS[lang]["status_title"])}</a></p>', here=self.base)

    def _error_page(self, status: int, lang: str, explicit: bool) -> str:
        w, e = _WORDS[lang], html.escape
        message = w.get(f"e{status}", w["e400"])
        main = (f'<div class="error" role="alert"><p>{e(message)}</p></div>'
                f'<p><a href="{e(self._with_lang(self.base, lang, explicit))}">{e(w["back"])}</a></p>')
        return self._page(lang, explicit, w["error_title"], main, here=self.base)


def _query(scope: Scope) -> dict[str, list[str]]:
    try:
        return parse_qs(scope.get("query_string", b"").decode("latin-1"), max_num_fields=20)
    except ValueError:
        return {}


def _allow(method: str, allowed: str) -> None:
    if method not in allowed.replace(" ", "").split(","):
        raise _Failure(405, allowed)


def _value(form: dict[str, list[str]], name: str, limit: int) -> str:
    values = form.get(name, [])
    if len(values) > 1:
        raise _Failure(400)
    value = values[0].strip() if values else ""
    if len(value) > limit:
        raise _Failure(422)
    return value


def _same_origin(headers: dict[bytes, str]) -> None:
    """Refuse a form post another site made (CSRF): trust the browser's Fetch Metadata, Origin, Referer."""
    site = headers.get(b"sec-fetch-site")
    if site is not None and site.lower() not in ("same-origin", "none"):
        raise _Failure(403)
    host = headers.get(b"host", "").strip().lower()
    origin = headers.get(b"origin")
    source = origin if origin is not None else headers.get(b"referer")
    if source is None:
        return
    if source.strip().lower() == "null":
        raise _Failure(403)
    try:
        parts = urlsplit(source.strip())
        netloc = parts.netloc.lower()
    except ValueError:
        raise _Failure(403) from None
    if parts.scheme not in ("http", "https") or not host or netloc != host:
        raise _Failure(403)
