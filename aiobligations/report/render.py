"""Render a :class:`~aiobligations.report.Report` as one self-contained HTML page.

The page has inline CSS and inline SVG charts drawn here, no script and nothing fetched, so it opens
offline and prints as it shows. Every chart repeats figures the tables beside it give in full, and
carries a text alternative. Rendering is deterministic: the same report gives the same bytes.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .build import Report

__all__ = ["COLOURS", "percent", "render_html", "share_bars", "stacked_bars"]

COLOURS = {"on time": "#2e7d32", "late": "#c62828", "pending": "#9e9e9e", "disclosed": "#1565c0",
           "not disclosed": "#c62828", "applied": "#2e7d32", "skipped": "#ef6c00", "absent": "#bdbdbd",
           "erasures": "#6a1b9a"}
"""The series colours, chosen to stay apart for the common colour-vision deficiencies and in greyscale."""


def _markup(text: str) -> Any:
    from markupsafe import Markup

    return Markup(text)


def _n(value: float) -> str:
    """A coordinate with at most one decimal, always written the same way."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def percent(value: float | None) -> str:
    """``0.953`` → ``95.3 %`` (with a no-break space); ``None`` → ``n/a``."""
    return "n/a" if value is None else f"{value * 100:.1f}\u00a0%"  # No break between the number and its sign.


def stacked_bars(title: str, categories: Sequence[str], series: Sequence[tuple[str, Sequence[int]]]) -> Any:
    """
    A vertical stacked bar chart as inline SVG: one bar per category, one segment per series.

    Args:
        title: The chart's accessible name.
        categories: The bars' labels (months), left to right.
        series: ``(name, values)``, one value per category, bottom segment first; colours from
            :data:`COLOURS`.

    Returns:
        Safe markup for the template.
    """
    step = 64
    width, height, left, bottom, top = max(360, 60 + step * len(categories), 8 * len(title)), 250, 44, 40, 44
    totals = [sum(values[i] for _, values in series) for i in range(len(categories))]
    peak = max(totals, default=0) or 1
    scale = (height - bottom - top) / peak
    parts = [f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>']
    parts.append(f'<text x="4" y="16" font-size="13" font-weight="600">{escape(title)}</text>')
    base = height - bottom
    parts.append(f'<line x1="{left}" y1="{base}" x2="{width - 8}" y2="{base}" stroke="#555"/>')
    parts.append(f'<text x="{left - 6}" y="{_n(base - peak * scale + 4)}" text-anchor="end" font-size="11">{peak}</text>')
    parts.append(f'<text x="{left - 6}" y="{base + 4}" text-anchor="end" font-size="11">0</text>')
    for i, category in enumerate(categories):
        x = left + 12 + step * i
        y = float(base)
        for name, values in series:
            value = values[i]
            if value:
                h = value * scale
                y -= h
                parts.append(f'<rect x="{x}" y="{_n(y)}" width="32" height="{_n(h)}" fill="{COLOURS.get(name, "#777")}">'
                             f'<title>{escape(category)}: {value} {escape(name)}</title></rect>')
        parts.append(f'<text x="{x + 16}" y="{_n(y - 4)}" text-anchor="middle" font-size="11">{totals[i]}</text>')
        parts.append(f'<text x="{x + 16}" y="{base + 16}" text-anchor="middle" font-size="11">{escape(category)}</text>')
    x = left
    for name, _ in series:
        parts.append(f'<rect x="{x}" y="{height - 14}" width="10" height="10" fill="{COLOURS.get(name, "#777")}"/>'
                     f'<text x="{x + 14}" y="{height - 5}" font-size="11">{escape(name)}</text>')
        x += 24 + 7 * len(name)
    parts.append("</svg>")
    return _markup("".join(parts))


def share_bars(title: str, rows: Sequence[tuple[str, Sequence[int]]], names: Sequence[str]) -> Any:
    """
    Horizontal 100 % bars as inline SVG: one bar per row, split into the named parts.

    Args:
        title: The chart's accessible name.
        rows: ``(label, counts)``, counts in the order of ``names``.
        names: The parts' names (colours from :data:`COLOURS`).

    Returns:
        Safe markup for the template.
    """
    label_width, bar, row_height = 260, 360, 24
    height = 54 + row_height * len(rows)
    width = label_width + bar + 80
    parts = [f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
             f'<text x="4" y="16" font-size="13" font-weight="600">{escape(title)}</text>']
    for i, (label, counts) in enumerate(rows):
        y = 28 + row_height * i
        whole = sum(counts)
        shown = label if len(label) <= 40 else label[:39] + "…"
        parts.append(f'<text x="{label_width - 8}" y="{y + 14}" text-anchor="end" font-size="12">{escape(shown)}</text>')
        x = float(label_width)
        for name, count in zip(names, counts):
            if count and whole:
                w = bar * count / whole
                parts.append(f'<rect x="{_n(x)}" y="{y}" width="{_n(w)}" height="18" fill="{COLOURS.get(name, "#777")}">'
                             f'<title>{escape(label)}: {count} of {whole} {escape(name)}</title></rect>')
                x += w
        if not whole:
            parts.append(f'<rect x="{label_width}" y="{y}" width="{bar}" height="18" fill="none" stroke="#bbb"/>')
        share = percent(counts[0] / whole if whole else None)
        parts.append(f'<text x="{label_width + bar + 6}" y="{y + 14}" font-size="12">{share}</text>')
    x = label_width
    for name in names:
        parts.append(f'<rect x="{x}" y="{height - 14}" width="10" height="10" fill="{COLOURS.get(name, "#777")}"/>'
                     f'<text x="{x + 14}" y="{height - 5}" font-size="11">{escape(name)}</text>')
        x += 24 + 7 * len(name)
    parts.append("</svg>")
    return _markup("".join(parts))


def _disclosure_rows(figures: Any) -> list[tuple[str, list[int]]]:
    return [(row.route, [row.disclosed, row.answered - row.disclosed]) for row in figures.routes]


def _label_rows(figures: Any) -> list[tuple[str, list[int]]]:
    return [(f"{row.format} {row.label}", [row.applied, row.skipped, row.absent]) for row in figures.rows]


def _month_series(months: Any, name: str) -> list[tuple[str, list[int]]]:
    tallies = [getattr(row, name) for row in months]
    return [(part, [getattr(t, part.replace(" ", "_")) for t in tallies]) for part in ("on time", "late", "pending")]


def render_html(report: Report) -> str:
    """
    The report's HTML page.

    Args:
        report: A built report.

    Returns:
        The page, UTF-8 text; the same report always gives the same text.

    Raises:
        ConfigurationError: jinja2 is not installed (``pip install 'aiobligations[report]'``).
    """
    try:
        import jinja2
    except ImportError:  # pragma: no cover - the report extra is in dev.
        from ..errors import ConfigurationError

        raise ConfigurationError("the audit report needs jinja2: pip install 'aiobligations[report]'") from None
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("aiobligations.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters["percent"] = percent
    environment.globals.update(stacked_bars=stacked_bars, share_bars=share_bars, disclosure_rows=_disclosure_rows,
                               label_rows=_label_rows, month_series=_month_series)
    return environment.get_template("report.html.j2").render(r=report)
