"""The transparency document (Art. 38(3), 31, 47, 70): what users are told before they use the service.

It is one JSON-ready ``dict``, served at ``/.well-known/ai-transparency`` and rendered as the page at
``{prefix}/transparency``. Its ``version`` is a short SHA-256 of its content, so a disclosure record
in the ledger can name exactly which version a person was shown.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from .settings import DisclosureSettings

if TYPE_CHECKING:
    from ..profile import Profile

__all__ = [
    "ARTICLES",
    "LAW",
    "SECURITY_TXT_PATH",
    "WELL_KNOWN_PATH",
    "document_version",
    "transparency_document",
    "with_incidents",
    "with_witness_conflicts",
]

WELL_KNOWN_PATH = "/.well-known/ai-transparency"
"""Where the JSON document is served; fixed, unlike the ``/ai`` prefix."""

SECURITY_TXT_PATH = "/.well-known/security.txt"
"""Where the RFC 9116 file is served."""

LAW = {"zh": "人工智能示范法 2.0（专家建议稿）", "en": "AI Model Law 2.0 (expert draft)"}
"""The law the document answers."""

ARTICLES = {
    "8": {"zh": "公平平等原则：考虑未成年人、老年人、残障人士的需求", "en": "Fairness: the needs of minors, older and disabled people"},
    "31": {"zh": "许可证公开", "en": "Showing the licence number"},
    "35": {"zh": "安全漏洞管理", "en": "Security vulnerability management"},
    "37": {"zh": "补救和通知义务（安全事件通知）", "en": "Remedies and notification (security incident notices)"},
    "38": {"zh": "公开透明性义务", "en": "Openness and transparency"},
    "39": {"zh": "可解释性义务", "en": "Explainability"},
    "47": {"zh": "备案义务（显著位置注明备案编号）", "en": "Filing (showing the filing number prominently)"},
    "70": {"zh": "民事侵权责任（提示用户不得侵犯知识产权、投诉机制）", "en": "Civil liability (IP notice to users, complaint mechanism)"},
}
"""The articles the document and its endpoints answer, with their headings."""


def _prefix(prefix: str) -> str:
    if not prefix.startswith("/") or prefix.endswith("/") and prefix != "/":
        raise ConfigurationError(f"prefix must start with '/' and not end with one, such as '/ai'; got {prefix!r}")
    return "" if prefix == "/" else prefix


def document_version(document: dict[str, Any]) -> str:
    """The short SHA-256 of a document's content, ignoring its ``version``, ``incidents`` and ``termination`` fields.

    ``incidents`` lists the security incidents open now (Art. 37) and ``termination`` the announced
    end of the service (Art. 50): live state added as it is served, not part of the notice a
    person was shown, so it never changes the version; nor does ``witness_conflicts`` (see
    :func:`with_witness_conflicts`).

    The content is hashed as canonical JSON (sorted keys, no spaces, UTF-8), so the same content
    always gives the same version, whatever order it was built in.

    Args:
        document: A transparency document.

    Returns:
        ``"sha256:"`` and the first 16 hex digits of the hash.
    """
    content = {key: value for key, value in document.items() if key not in ("version", "incidents", "termination", "witness_conflicts")}
    data = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return "sha256:" + hashlib.sha256(data).hexdigest()[:16]


def transparency_document(
    profile: Profile,
    settings: DisclosureSettings,
    *,
    prefix: str = "/ai",
    verifier_key: str,
    origin: str,
) -> dict[str, Any]:
    """Build the transparency document.

    It holds every element of Art. 38(3): the service's principles, purpose and mechanism (一), its
    licence or filing information (二, with Art. 31 and 47), the users' rights and remedies with the
    endpoints that serve them (三); and besides, the Art. 70 IP notice, the labelling policy, data
    retention, the public ledger that evidence is kept in, and links to the page and security.txt.
    Texts appear as ``{"zh": …, "en": …}``.

    Args:
        profile: The provider's profile (provider, service, numbers).
        settings: The disclosure settings (the texts).
        prefix: Where the ``/ai`` endpoints are mounted.
        verifier_key: The ledger's published verifier key (``name+keyid+base64``).
        origin: The ledger's origin line, as in every checkpoint.

    Returns:
        The document, JSON-ready, with its ``version``.

    Raises:
        ValueError: a malformed ``prefix``.
    """
    base = _prefix(prefix)
    provider, service, t = profile.provider, profile.service, settings.transparency
    document: dict[str, Any] = {
        "law": {"name": dict(LAW), "articles": {number: dict(text) for number, text in ARTICLES.items()}},
        "provider": {
            "name": provider.name,
            "name_zh": provider.name_zh,
            "code": provider.code,
            "contact": provider.contact,
            "website": provider.website,
        },
        "service": {"name": service.name, "description": service.description, "model": service.model},
        "registration": {
            "licence_number": service.licence_number,
            "filing_number": service.filing_number,
        },
        "disclosure": {"mode": settings.mode, "header": "AI-Disclosure", "interaction_id_header": "AI-Interaction-Id"},
        "purpose": t.purpose.as_dict(),
        "principles": t.principles.as_dict(),
        "mechanism": t.mechanism.as_dict(),
        "user_rights": t.user_rights.as_dict(),
        "remedies": {
            "text": t.remedies.as_dict(),
            "explanations": f"{base}/explanations",
            "complaints": f"{base}/complaints",
            "form": f"{base}/requests",
            "contact": provider.contact,
        },
        "ip_notice": t.ip_notice.as_dict(),
        "labelling": t.labelling.as_dict(),
        "data_retention": t.data_retention.as_dict(),
        "ledger": {"origin": origin, "verifier_key": verifier_key, "checkpoint_url": f"{base}/checkpoint"},
        "links": {
            "html": f"{base}/transparency",
            "json": WELL_KNOWN_PATH,
            "security_txt": SECURITY_TXT_PATH,
        },
    }
    witnesses = getattr(profile, "raw", {}).get("witnesses")
    if isinstance(witnesses, dict) and isinstance(witnesses.get("servers"), list):
        # Who cosigns the ledger's checkpoints, so an auditor knows which cosignatures to require.
        document["ledger"]["witnesses"] = {
            "quorum": witnesses.get("quorum", 1),
            "keys": [str(s.get("key", "")) for s in witnesses["servers"] if isinstance(s, dict)],
        }
    document["version"] = document_version(document)
    return document


def with_incidents(document: dict[str, Any], incidents: list[dict[str, Any]]) -> dict[str, Any]:
    """The document with the open security incidents listed (Art. 37), its version unchanged.

    Args:
        document: A transparency document.
        incidents: ``[{"id", "title", "url", "opened"}]``, the open incidents, oldest first.

    Returns:
        A new document; ``incidents`` is an empty list when none is open.

    .. versionadded:: 0.2.0
    """
    return {**document, "incidents": [dict(item) for item in incidents]}


def with_witness_conflicts(document: dict[str, Any], conflicts: list[dict[str, Any]]) -> dict[str, Any]:
    """The document with the witnesses' conflict answers (``witness_conflicts``), its version unchanged.

    A conflict means a witness has cosigned a version of this log that the log does not extend:
    the log was rolled back or forked, or another version of it was shown to the witness. The
    document then says so openly, in both languages.

    Args:
        document: A transparency document.
        conflicts: ``[{"witness", "size", "witness_size", "reason", "ts", "index"}]``, oldest first
            (the ``witness.conflict`` records of the ledger).

    Returns:
        A new document with ``witness_conflicts``; the document itself when there are none.

    .. versionadded:: 0.2.0
    """
    if not conflicts:
        return document
    return {**document, "witness_conflicts": {
        "statement": {
            "zh": "至少一个见证方报告了冲突：它曾联署的日志版本不是本日志的前缀（回滚或分叉）。",
            "en": "At least one witness reported a conflict: a version of this log it cosigned is not "
                  "a prefix of this one (a rollback or a fork).",
        },
        "conflicts": [dict(item) for item in conflicts],
    }}
