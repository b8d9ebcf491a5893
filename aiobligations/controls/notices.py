"""Incident notices (Art. 37): for users and for the authority, in Chinese and English.

Both are rendered from the incident's records alone, so any process renders the same notice. Each
carries every element Art. 37(3) lists: the course of events and the scope (一), the remedial
measures taken and what users can do to reduce harm (二), and the provider's contact (三). The
authority's notice adds who the provider is (name, code, licence and filing numbers), the times,
the suspension and every recorded step with its ledger index.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .incidents import Incident

if TYPE_CHECKING:
    from ..profile import Profile

__all__ = ["ELEMENTS", "authority_notice", "user_notice", "user_notice_html"]

ELEMENTS = ("course", "scope", "measures", "user_actions", "contact")
"""The Art. 37(3) elements, in the order the article lists them."""

_WORDS: dict[str, dict[str, str]] = {
    "zh": {
        "user_title": "安全事件通知", "authority_title": "人工智能安全事件报告", "colon": "：",
        "course": "事件发生过程", "scope": "影响范围", "measures": "已采取的补救措施",
        "user_actions": "您可以采取的减轻危害的措施", "contact": "联系方式",
        "course_unknown": "事件经过正在调查中，查明后我们将更新本通知。",
        "status": "状态", "open": "处理中", "closed": "已处理完毕", "opened": "发现时间", "updated": "最近更新",
        "closed_at": "结束时间", "resolution": "处理结果", "suspended": "在风险消除前，本服务的人工智能功能已暂停。",
        "severity": "严重程度", "incident": "事件编号", "provider": "人工智能提供者", "code": "提供者编码",
        "service": "服务名称", "licence": "许可证编号", "filing": "备案编号", "none": "无",
        "suspend": "暂停服务", "yes": "是", "no": "否", "steps": "处置记录（证据账本）", "index": "账本序号",
        "by": "操作人", "law": "依据《人工智能示范法 2.0（专家建议稿）》第三十七条",
        "authority_user_actions": "使用者可以采取的减轻危害的措施", "switch": "English", "switch_lang": "en",
        "open_step": "开启", "update_step": "更新", "close_step": "关闭",
        "article_3_1": "（一）安全事件的发生过程、影响范围", "article_3_2": "（二）已采取的补救措施和使用者可以采取的减轻危害的措施",
        "article_3_3": "（三）联系方式",
    },
    "en": {
        "user_title": "Security incident notice", "authority_title": "AI security incident report", "colon": ": ",
        "course": "What happened", "scope": "Who and what is affected", "measures": "What we have done",
        "user_actions": "What you can do to reduce harm", "contact": "Contact",
        "course_unknown": "We are still establishing what happened and will update this notice.",
        "status": "Status", "open": "being handled", "closed": "resolved", "opened": "Found", "updated": "Last update",
        "closed_at": "Closed", "resolution": "Resolution",
        "suspended": "The service's AI features are suspended until the risk is resolved.",
        "severity": "Severity", "incident": "Incident", "provider": "AI provider", "code": "Provider code",
        "service": "Service", "licence": "Licence number", "filing": "Filing number", "none": "none",
        "suspend": "Service suspended", "yes": "yes", "no": "no", "steps": "Steps recorded (evidence ledger)",
        "index": "ledger index", "by": "by", "law": "Under Art. 37 of the AI Model Law 2.0 (expert draft)",
        "authority_user_actions": "What users can do to reduce harm", "switch": "中文", "switch_lang": "zh",
        "open_step": "opened", "update_step": "updated", "close_step": "closed",
        "article_3_1": "(1) The course of events and the scope", "article_3_2":
        "(2) The remedial measures taken and what users can do to reduce harm", "article_3_3": "(3) Contact",
    },
}


def _lang(lang: str) -> str:
    return "en" if lang == "en" else "zh"


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment is not None else "-"


def _provider_name(profile: Profile | None, lang: str) -> str | None:
    if profile is None:
        return None
    if lang == "zh" and profile.provider.name_zh:
        return profile.provider.name_zh
    return profile.provider.name


def user_notice(incident: Incident, lang: str = "zh", *, profile: Profile | None = None) -> dict[str, Any]:
    """
    The user notice as JSON values: headings and texts of every Art. 37(3) element.

    Args:
        incident: The incident.
        lang: ``"zh"`` or ``"en"``.
        profile: The provider's profile, for its name.

    Returns:
        ``{"id", "lang", "title", "heading", "status", "opened", "updated", "closed", "suspended",
        "provider", "sections": [{"element", "heading", "text"}], "resolution", "notice"}`` where
        ``notice`` is the whole notice as plain text.

    .. versionadded:: 0.2.0
    """
    lang = _lang(lang)
    w = _WORDS[lang]
    texts = {"course": incident.course or w["course_unknown"], "scope": incident.scope,
             "measures": incident.measures, "user_actions": incident.user_actions, "contact": incident.contact}
    sections = [{"element": name, "heading": w[name], "text": texts[name]} for name in ELEMENTS]
    c = w["colon"]
    lines = [f"{w['user_title']}{c}{incident.title}", f"{w['incident']}{c}{incident.id}",
             f"{w['status']}{c}{w['open'] if incident.open else w['closed']}",
             f"{w['opened']}{c}{_when(incident.opened)}", f"{w['updated']}{c}{_when(incident.updated)}"]
    if incident.open and incident.suspend:
        lines.append(w["suspended"])
    for section in sections:
        lines.extend(("", f"{section['heading']}{w['colon'].strip()}", section["text"]))
    if not incident.open:
        lines.extend(("", f"{w['resolution']} ({_when(incident.closed)}){w['colon'].strip()}",
                      incident.resolution or "-"))
    return {
        "id": incident.id,
        "lang": lang,
        "heading": w["user_title"],
        "title": incident.title,
        "status": "open" if incident.open else "closed",
        "opened": _when(incident.opened),
        "updated": _when(incident.updated),
        "closed": _when(incident.closed) if incident.closed else None,
        "suspended": incident.open and incident.suspend,
        "provider": _provider_name(profile, lang),
        "sections": sections,
        "resolution": incident.resolution,
        "notice": "\n".join(lines) + "\n",
    }


_STYLE = (
    "body{margin:0;background:#fff;color:#1a1a1a;font:18px/1.6 system-ui,-apple-system,'Segoe UI',"
    "'PingFang SC','Microsoft YaHei',sans-serif}main,header{max-width:44em;margin:0 auto;padding:1em 1.25em}"
    "h1{font-size:1.6em;line-height:1.3}h2{font-size:1.2em;margin:1.4em 0 0.3em}"
    "a{color:#0b4f9c}.alert{border:3px solid #8a1c1c;padding:0.6em 0.9em;font-weight:600}"
    "p{white-space:pre-line;overflow-wrap:anywhere}nav{text-align:right}"
)


def user_notice_html(incident: Incident, lang: str = "zh", *, profile: Profile | None = None,
                     url: str | None = None) -> str:
    """
    The user notice as a complete, self-contained HTML page (every text escaped).

    Args:
        incident: The incident.
        lang: ``"zh"`` or ``"en"``; the page links to the other language (``?lang=``).
        profile: The provider's profile, for its name.
        url: The page's own path, for the language link (default: a relative ``?lang=`` link).

    .. versionadded:: 0.2.0
    """
    notice = user_notice(incident, lang, profile=profile)
    lang = notice["lang"]
    w = _WORDS[lang]
    e = html.escape
    other = w["switch_lang"]
    parts = [
        f'<!DOCTYPE html>\n<html lang="{"zh-CN" if lang == "zh" else "en"}"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(w['user_title'])}{w['colon']}{e(incident.title)}</title><style>{_STYLE}</style></head><body>",
        f'<header><nav><a href="{e(url or "")}?lang={other}" lang="{other}">{e(w["switch"])}</a></nav>',
        f"<h1>{e(w['user_title'])}{w['colon']}{e(incident.title)}</h1></header><main>",
    ]
    if notice["provider"]:
        parts.append(f"<p>{e(w['provider'])}{w['colon']}{e(notice['provider'])}</p>")
    c = w["colon"]
    parts.append(f"<p>{e(w['incident'])}{c}<code>{e(incident.id)}</code><br>{e(w['status'])}{c}"
                 f"{e(w['open'] if incident.open else w['closed'])}<br>{e(w['opened'])}{c}{e(notice['opened'])}"
                 f"<br>{e(w['updated'])}{c}{e(notice['updated'])}</p>")
    if notice["suspended"]:
        parts.append(f'<p class="alert" role="alert">{e(w["suspended"])}</p>')
    for section in notice["sections"]:
        parts.append(f"<h2>{e(section['heading'])}</h2><p>{e(section['text'])}</p>")
    if not incident.open:
        parts.append(f"<h2>{e(w['resolution'])}</h2><p>{e(incident.resolution or '-')}</p>")
    parts.append(f"<p><small>{e(w['law'])}</small></p></main></body></html>\n")
    return "".join(parts)


def authority_notice(incident: Incident, lang: str = "zh", *, profile: Profile | None = None) -> str:
    """
    The report to the authority, as plain text, from the incident's records.

    It follows Art. 37(3) item by item, and adds the provider's identity (name, code, licence and
    filing numbers, from ``profile``), the severity, the suspension, and every recorded step with
    its time, operator and ledger index, so the report can be checked against the ledger.

    .. versionadded:: 0.2.0
    """
    lang = _lang(lang)
    w = _WORDS[lang]
    none = w["none"]
    lines = [f"{w['authority_title']}{w['colon']}{incident.title}", w["law"], ""]
    if profile is not None:
        lines.extend((f"{w['provider']}{w['colon']}{_provider_name(profile, lang)}",
                      f"{w['code']}{w['colon']}{profile.provider.code or none}",
                      f"{w['contact']}{w['colon']}{profile.provider.contact}",
                      f"{w['service']}{w['colon']}{profile.service.name or none}",
                      f"{w['licence']}{w['colon']}{profile.service.licence_number or none}",
                      f"{w['filing']}{w['colon']}{profile.service.filing_number or none}", ""))
    lines.extend((f"{w['incident']}{w['colon']}{incident.id}",
                  f"{w['status']}{w['colon']}{w['open'] if incident.open else w['closed']}",
                  f"{w['severity']}{w['colon']}{incident.severity or none}",
                  f"{w['opened']}{w['colon']}{_when(incident.opened)}",
                  f"{w['updated']}{w['colon']}{_when(incident.updated)}",
                  f"{w['suspend']}{w['colon']}{w['yes'] if incident.open and incident.suspend else w['no']}", ""))
    lines.extend((w["article_3_1"], f"  {w['course']}{w['colon']}{incident.course or w['course_unknown']}",
                  f"  {w['scope']}{w['colon']}{incident.scope}", "",
                  w["article_3_2"], f"  {w['measures']}{w['colon']}{incident.measures}",
                  f"  {w['authority_user_actions']}{w['colon']}{incident.user_actions}", "",
                  w["article_3_3"], f"  {w['contact']}{w['colon']}{incident.contact}", ""))
    if not incident.open:
        lines.extend((f"{w['closed_at']}{w['colon']}{_when(incident.closed)}",
                      f"{w['resolution']}{w['colon']}{incident.resolution or '-'}", ""))
    lines.append(f"{w['steps']}{w['colon'].strip()}")
    for step in incident.history:
        changed = f" ({', '.join(step.changed)})" if step.changed and step.step == "update" else ""
        lines.append(f"  {_when(step.at)}  {w[step.step + '_step']}{changed}  {w['by']} {step.by or '-'}  "
                     f"[{w['index']} {step.index}]")
    return "\n".join(lines) + "\n"
