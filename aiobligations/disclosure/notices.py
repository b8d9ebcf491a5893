"""The notices that tell a person they are dealing with AI (Art. 38(1)), in plain Chinese and English.

Art. 38(1) asks for a notice that is concise, clear and easy to understand, given before use; Art. 8
asks that minors, older people and people with disabilities be considered. So the texts use short
sentences and everyday words, the HTML banner is a labelled landmark that screen readers announce,
its colours pass WCAG AA contrast (4.5:1) at a 16px font, and it needs no JavaScript.
"""

from __future__ import annotations

import html

from ..errors import ConfigurationError
from .header import MODES
from .settings import DisclosureSettings

__all__ = [
    "FIRST_CONTACT_NOTICE",
    "META_VALUES",
    "SHORT_NOTICE",
    "banner_html",
    "first_contact_notice",
    "meta_tag",
    "short_notice",
]

SHORT_NOTICE = {
    "zh": "您正在与人工智能交互。回答由人工智能生成，可能有错误。",
    "en": "You are interacting with an AI system. Its answers may be wrong.",
}
"""The built-in short notice, sent with every AI response."""

FIRST_CONTACT_NOTICE = {
    "zh": "您正在使用人工智能服务。这里的回答由人工智能自动生成，不是真人写的，可能不准确，也可能有错误；"
    "重要的事情请再向可靠的来源核实。想知道它怎样工作、由谁提供，请看透明度说明：{transparency_url}。"
    "您可以要求我们解释某个回答，也可以投诉，我们会及时答复。",
    "en": "You are using an AI service. The answers here are made automatically by AI, not written by a "
    "person. They may be inaccurate or wrong, so please check anything important with a reliable source. "
    "To find out how it works and who provides it, see the transparency page: {transparency_url}. "
    "You can ask us to explain an answer, or make a complaint, and we will reply promptly.",
}
"""The built-in first-contact notice, shown once to each person; ``{transparency_url}`` is filled in."""

META_VALUES = {
    "none": "none",
    "ai-modified": "ai-assisted",
    "ai-originated": "ai-generated",
    "machine-generated": "autonomous",
}
"""draft-abaris-aicdh modes → the W3C AI Content Disclosure CG's ``<meta name="ai-disclosure">`` values."""

_LABELS = {
    "zh": {"aside": "人工智能提示", "more": "了解详情", "id": "交互编号：", "end": "。", "why": "要求解释或投诉时请提供此编号。"},
    "en": {
        "aside": "AI notice",
        "more": "Learn more",
        "id": "Interaction number: ",
        "end": ". ",
        "why": "Quote it if you ask for an explanation or make a complaint.",
    },
}

# Dark text on a pale amber ground: 15.5:1; the link colour on the same ground: 7.6:1 (WCAG AA is 4.5:1).
_TEXT, _BACKGROUND, _LINK, _BORDER = "#1f1f1f", "#fff8e1", "#0b4f9c", "#8a6d00"


def _lang(lang: str) -> str:
    return "en" if lang == "en" else "zh"


def _check_url(url: str) -> str:
    if not (url.startswith("/") and not url.startswith("//")) and not url.startswith(("https://", "http://")):
        raise ConfigurationError(f"transparency_url must be a path starting with '/' or an http(s) URL, got {url!r}")
    return url


def short_notice(settings: DisclosureSettings, lang: str) -> str:
    """The short notice that goes with every AI response.

    Args:
        settings: The disclosure settings (a custom ``[disclosure] notice`` replaces the built-in).
        lang: ``"zh"`` or ``"en"``; anything else gets Chinese.

    Returns:
        One or two short sentences saying the user is interacting with AI.
    """
    lang = _lang(lang)
    return settings.notice.get(lang) if settings.notice is not None else SHORT_NOTICE[lang]


def first_contact_notice(settings: DisclosureSettings, lang: str, *, transparency_url: str) -> str:
    """The longer notice shown the first time a person meets the service.

    It says what the service is, that its outputs may be wrong, where the transparency page is, and
    that the person may ask for an explanation or complain.

    Args:
        settings: The disclosure settings (a custom ``[disclosure] first_contact_notice`` replaces
            the built-in; ``{transparency_url}`` in it is replaced).
        lang: ``"zh"`` or ``"en"``.
        transparency_url: Where the transparency page is, such as ``/ai/transparency``.

    Returns:
        The notice as plain text.

    Raises:
        ValueError: ``transparency_url`` is neither a path nor an http(s) URL.
    """
    lang = _lang(lang)
    custom = settings.first_contact_notice
    template = custom.get(lang) if custom is not None else FIRST_CONTACT_NOTICE[lang]
    # str.replace, not str.format: a provider's text may contain other braces.
    return template.replace("{transparency_url}", _check_url(transparency_url))


def banner_html(
    settings: DisclosureSettings,
    lang: str,
    *,
    transparency_url: str,
    interaction_id: str,
    first_contact: bool,
) -> str:
    """A small self-contained HTML notice to put at the top of an AI-generated page.

    It is an ``<aside role="note">`` with an accessible name, inline styles only (no scripts, no
    external resources), text and link colours above 4.5:1 contrast, the notice (the first-contact
    one when ``first_contact``), a link to the transparency page and the interaction number to quote.
    Every value is HTML-escaped.

    Args:
        settings: The disclosure settings.
        lang: ``"zh"`` or ``"en"``.
        transparency_url: The transparency page's path or URL.
        interaction_id: The interaction's id (the ``AI-Interaction-Id`` header).
        first_contact: Show the longer first-contact notice.

    Returns:
        One HTML fragment.

    Raises:
        ValueError: ``transparency_url`` is neither a path nor an http(s) URL.
    """
    lang = _lang(lang)
    labels = _LABELS[lang]
    url = _check_url(transparency_url)
    text = (
        first_contact_notice(settings, lang, transparency_url=url) if first_contact else short_notice(settings, lang)
    )
    e = html.escape
    return (
        f'<aside role="note" aria-label="{e(labels["aside"])}" lang="{lang}" '
        f'style="margin:0 0 1em;padding:0.75em 1em;border:2px solid {_BORDER};'
        f"border-radius:6px;background:{_BACKGROUND};color:{_TEXT};font:16px/1.5 system-ui,sans-serif\">"
        f'<p style="margin:0"><strong>{e(text)}</strong> '
        f'<a href="{e(url)}" style="color:{_LINK};text-decoration:underline">{e(labels["more"])}</a></p>'
        f'<p style="margin:0.25em 0 0;font-size:0.875em">{e(labels["id"])}'
        f"<code>{e(interaction_id)}</code>{e(labels['end'])}{e(labels['why'])}</p></aside>"
    )


def meta_tag(mode: str) -> str:
    """The page-level ``<meta name="ai-disclosure">`` tag proposed by the W3C AI Content Disclosure CG.

    Our modes (draft-abaris-aicdh) map to its values: ``none`` → ``none``, ``ai-modified`` →
    ``ai-assisted``, ``ai-originated`` → ``ai-generated``, ``machine-generated`` → ``autonomous``.

    Args:
        mode: One of :data:`~aiobligations.disclosure.header.MODES`.

    Returns:
        For example ``<meta name="ai-disclosure" content="ai-generated">``.

    Raises:
        ValueError: an unknown mode.
    """
    if mode not in META_VALUES:
        raise ConfigurationError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    return f'<meta name="ai-disclosure" content="{META_VALUES[mode]}">'
