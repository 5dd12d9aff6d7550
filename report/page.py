"""The report's rows, and the HTML page: the table and a chart, diversity against log-prob.

One self-contained page (inline CSS and SVG; no script, nothing fetched): each point is a dot
at (distinct-2, mean log-prob per token), labelled with its index; hovering shows its values.
"""
from __future__ import annotations

import html

from decode.report.metrics import Point, distinct, repetition

METRICS = ("seqs", "new", "dist-1", "dist-2", "rep-4", "logp", "ppl", "finish", "tok/s")


def columns(found: list[Point]) -> list[str]:
    """The table's header: the point, its swept values (or its recipe), then the metrics."""
    axes = list(found[0].values) if found and found[0].values else ["recipe"]
    return ["point", *axes, *METRICS]


def _num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def rows(found: list[Point]) -> list[list[str]]:
    """The table's cells, one row per point ('-' where a number does not exist)."""
    out = []
    for p in found:
        values = [str(v) for v in p.values.values()] or [p.recipe]
        finish = " ".join(f"{k}:{n}" for k, n in sorted(p.finishes.items()))
        out.append([str(p.index), *values, str(len(p.seqs)), _num(p.mean_new, 1),
                    _num(distinct(p.seqs, 1)), _num(distinct(p.seqs, 2)), _num(repetition(p.seqs)),
                    _num(p.mean_logp), _num(p.perplexity, 2), finish, _num(p.tokens_per_s, 1)])
    return out


W, H, PAD = 640, 420, 56


def chart(found: list[Point]) -> str:
    """An SVG scatter of the points: x distinct-2, y mean log-prob per token."""
    dots = [(p, distinct(p.seqs, 2), p.mean_logp) for p in found]
    dots = [(p, x, y) for p, x, y in dots if x is not None and y is not None]
    if not dots:
        return '<p class="meta">No point has both a distinct-2 and a log-prob to chart.</p>'
    xs, ys = [x for _, x, _ in dots], [y for _, _, y in dots]
    x0, x1 = _span(xs)
    y0, y1 = _span(ys)

    def at(x: float, y: float) -> tuple[float, float]:
        return (PAD + (x - x0) / (x1 - x0) * (W - 2 * PAD), H - PAD - (y - y0) / (y1 - y0) * (H - 2 * PAD))

    parts = [f'<svg class="chart" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" '
             'aria-label="diversity against log-prob, one dot per point">',
             f'<line class="axis" x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}"/>',
             f'<line class="axis" x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}"/>',
             f'<text x="{W / 2}" y="{H - 14}" text-anchor="middle">distinct-2 (more diverse →)</text>',
             f'<text x="16" y="{H / 2}" transform="rotate(-90 16 {H / 2})" text-anchor="middle">'
             'mean log-prob per token (more likely ↑)</text>']
    for v, label in ((x0, _num(x0, 2)), (x1, _num(x1, 2))):
        parts.append(f'<text class="tick" x="{at(v, y0)[0]:.1f}" y="{H - PAD + 16}" text-anchor="middle">{label}</text>')
    for v in (y0, y1):
        parts.append(f'<text class="tick" x="{PAD - 6}" y="{at(x0, v)[1] + 4:.1f}" text-anchor="end">{_num(v, 2)}</text>')
    for p, x, y in dots:
        cx, cy = at(x, y)
        tip = html.escape(", ".join(f"{k}={v}" for k, v in p.values.items()) or p.recipe)
        parts.append(f'<g class="dot" data-point="{p.index}"><title>point {p.index}: {tip}</title>'
                     f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="6"/>'
                     f'<text x="{cx + 9:.1f}" y="{cy + 4:.1f}">{p.index}</text></g>')
    return "".join(parts) + "</svg>"


def _span(v: list[float]) -> tuple[float, float]:
    lo, hi = min(v), max(v)
    pad = (hi - lo) * 0.08 or abs(lo) * 0.05 or 0.05  # one point, or all equal: a visible range
    return lo - pad, hi + pad


CSS = """
body { font: 14px system-ui, sans-serif; margin: 16px; color: #111; background: #fff; }
h1 { font-size: 18px; margin: 0 0 8px; } .meta { color: #555; margin-bottom: 12px; }
table { border-collapse: collapse; margin-top: 16px; } td, th { border: 1px solid #e5e7eb; padding: 4px 8px; }
th { background: #f3f4f6; text-align: left; } td { font-variant-numeric: tabular-nums; }
svg.chart { border: 1px solid #e5e7eb; border-radius: 6px; } svg text { font: 12px system-ui, sans-serif; }
.axis { stroke: #374151; } .tick { fill: #6b7280; } .dot circle { fill: #2563eb; fill-opacity: .75; }
.dot:hover circle { fill: #b91c1c; }
"""

PAGE_START = '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>decode report: '


def render(found: list[Point], source: str, model: str) -> str:
    """The whole page."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns(found))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows(found))
    return (PAGE_START + f"{html.escape(source)}</title><style>{CSS}</style></head><body>"
            f"<h1>decode report: <code>{html.escape(source)}</code></h1>"
            f'<div class="meta">{len(found)} points · logp: mean log-prob per new token under '
            f"{html.escape(model)}, ppl = exp(-logp) · dist-n: distinct n-grams pooled over a point's sequences (Li et al. 2016) · rep-4: seq-rep-4 (Welleck "
            "et al. 2019) · tok/s: new tokens per second of decoding (a first batch includes the "
            "compile)</div>"
            f"{chart(found)}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            "</body></html>\n")
