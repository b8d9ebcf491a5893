"""What each format gets: implicit label, explicit label, C2PA, watermark, from the code itself.

``docs/labels.md`` carries this table; ``tests/test_labels_conformance.py`` regenerates it and fails
when the page and the code disagree, so the table cannot drift.
"""

from __future__ import annotations

from .labeller import C2PA_UNSUPPORTED, EXPLICIT, FORMATS, WATERMARKED

__all__ = ["conformance_markdown", "conformance_rows"]


def _c2pa_types() -> set[str]:
    try:
        import c2pa
    except ImportError:  # pragma: no cover - without the media extra.
        return set()
    return set(c2pa.Builder.get_supported_mime_types())


def conformance_rows() -> list[dict[str, str]]:
    """One row per format: its media type and the status of each kind of label."""
    c2pa_types = _c2pa_types()
    rows = []
    for module in FORMATS:
        media_type = module.MEDIA_TYPES[0]
        placement = (module.__doc__ or "").strip().splitlines()[0].split(": ", 1)[-1].rstrip(".")
        rows.append({
            "format": media_type,
            "implicit": f"✅ {placement}",
            "explicit": f"✅ {EXPLICIT[module]}" if module in EXPLICIT else "❌ not yet",
            "c2pa": (f"❌ {C2PA_UNSUPPORTED[module]}" if module in C2PA_UNSUPPORTED
                     else "✅" if any(t in c2pa_types for t in module.MEDIA_TYPES) else "❌ not supported by c2pa"),
            "watermark": "✅ periodic spread spectrum, blind" if module in WATERMARKED else "❌ not yet",
        })
    rows.append({
        "format": "text (API responses)",
        "implicit": "— no file, no metadata (the implicit label is a file-metadata duty; our reading: none for a bare API string)",
        "explicit": "✅ wording validated; `label_text`, `label_chat_completion`; the disclosure notice",
        "c2pa": "—",
        "watermark": "❌ not yet",
    })
    return rows


def conformance_markdown() -> str:
    """The table as Markdown, as ``docs/labels.md`` holds it."""
    lines = ["| format | implicit (GB 45438 Annex E) | explicit | C2PA | watermark |", "|---|---|---|---|---|"]
    for row in conformance_rows():
        lines.append(f"| {row['format']} | {row['implicit']} | {row['explicit']} | {row['c2pa']} | {row['watermark']} |")
    return "\n".join(lines) + "\n"
