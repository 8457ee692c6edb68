"""Charts as inline SVG, rendered on the server (no script, no external library).

Every text that comes from data is escaped; the result is ``Markup`` for the
templates. Each chart carries a ``<title>`` and a table-like ``<desc>`` so it
reads without seeing it."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

PALETTE = ["#1f5fa8", "#d9822b", "#2e8b57", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d", "#b8860b"]
ALLOW = "#2e8b57"
DENY = "#c0392b"
WIDTH = 720
BAR_AREA = 180


def _svg(title: str, height: int, body: list[str], desc: str) -> Markup:
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="chart" '
        f'viewBox="0 0 {WIDTH} {height}" width="100%" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
        f"<desc>{escape(desc)}</desc>"
    )
    return Markup(head + "".join(body) + "</svg>")  # noqa: S704 - every data text is escaped


def empty(title: str) -> Markup:
    return _svg(
        title,
        40,
        ['<text x="10" y="25" class="muted">No data in this period</text>'],
        "No data in this period",
    )


def stacked_days(
    title: str,
    days: Sequence[str],
    series: dict[str, dict[str, int]],
    names: dict[str, str],
    colors: dict[str, str] | None = None,
) -> Markup:
    """One bar per day, stacked per key (e.g. requesting agency), with a legend."""
    if not days or not any(any(v.values()) for v in series.values()):
        return empty(title)
    keys = sorted(series)
    colors = colors or {}

    def color(index: int, key: str) -> str:
        return colors.get(key, PALETTE[index % len(PALETTE)])

    totals = [sum(series[k].get(d, 0) for k in keys) for d in days]
    top = max(*totals, 1)
    left, bottom = 40, 20 + BAR_AREA
    step = (WIDTH - left - 10) / len(days)
    bar = max(step * 0.7, 1.0)
    body = [
        f'<line x1="{left}" y1="{bottom}" x2="{WIDTH - 10}" y2="{bottom}" class="axis"/>',
        f'<text x="{left - 5}" y="28" text-anchor="end" class="tick">{top}</text>',
        f'<text x="{left - 5}" y="{bottom}" text-anchor="end" class="tick">0</text>',
    ]
    for i, day in enumerate(days):
        x = left + i * step + (step - bar) / 2
        y = float(bottom)
        for k_index, key in enumerate(keys):
            count = series[key].get(day, 0)
            if not count:
                continue
            h = count / top * BAR_AREA
            y -= h
            body.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{color(k_index, key)}"><title>{escape(day)} '
                f"{escape(names.get(key, key))}: {count}</title></rect>"
            )
        if len(days) <= 12 or i % max(1, len(days) // 8) == 0:
            body.append(
                f'<text x="{x + bar / 2:.1f}" y="{bottom + 14}" text-anchor="middle" '
                f'class="tick">{escape(day[5:])}</text>'
            )
    legend_y = bottom + 34
    for k_index, key in enumerate(keys):
        y = legend_y + k_index * 16
        body.append(
            f'<rect x="{left}" y="{y - 9}" width="10" height="10" '
            f'fill="{color(k_index, key)}"/>'
            f'<text x="{left + 16}" y="{y}" class="legend">{escape(names.get(key, key))}</text>'
        )
    desc = "; ".join(
        f"{day}: "
        + ", ".join(f"{names.get(k, k)} {series[k][day]}" for k in keys if series[k].get(day))
        for day in days
    )
    return _svg(title, legend_y + 16 * len(keys), body, desc)


def outcome_bars(title: str, rows: Sequence[tuple[str, int, int]]) -> Markup:
    """Per label (e.g. purpose) one horizontal bar: allowed and denied items."""
    if not rows:
        return empty(title)
    top = max(*(a + d for _, a, d in rows), 1)
    label_w, row_h = 260, 26
    span = WIDTH - label_w - 60
    body: list[str] = []
    for i, (label, allowed, denied) in enumerate(rows):
        y = 10 + i * row_h
        wa = allowed / top * span
        wd = denied / top * span
        body.append(
            f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end" class="legend">'
            f"{escape(label)}</text>"
            f'<rect x="{label_w}" y="{y}" width="{wa:.1f}" height="18" fill="{ALLOW}">'
            f"<title>{escape(label)}: allowed {allowed}</title></rect>"
            f'<rect x="{label_w + wa:.1f}" y="{y}" width="{wd:.1f}" height="18" fill="{DENY}">'
            f"<title>{escape(label)}: denied {denied}</title></rect>"
            f'<text x="{label_w + wa + wd + 6:.1f}" y="{y + 14}" class="tick">'
            f"{allowed} / {denied}</text>"
        )
    y = 10 + len(rows) * row_h + 8
    body.append(
        f'<rect x="{label_w}" y="{y}" width="10" height="10" fill="{ALLOW}"/>'
        f'<text x="{label_w + 16}" y="{y + 9}" class="legend">allowed</text>'
        f'<rect x="{label_w + 90}" y="{y}" width="10" height="10" fill="{DENY}"/>'
        f'<text x="{label_w + 106}" y="{y + 9}" class="legend">denied</text>'
    )
    desc = "; ".join(f"{label}: allowed {a}, denied {d}" for label, a, d in rows)
    return _svg(title, y + 20, body, desc)
