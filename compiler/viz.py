"""Draw a search trace (see `trace.py`) as a tree: in the terminal, or as one HTML page.

    $ decode viz trace.jsonl                  # rich Tree on stdout
    $ decode viz trace.jsonl --html tree.html # one self-contained page, inline SVG

Nodes are kept tokens, pruned candidates hang off the node they would have extended
(dimmed), finished nodes are marked, diverse groups get a colour each, and the returned
sequences are ranked at their last node. Imports no torch: drawing a trace is fast.
"""
from __future__ import annotations

import html
import json
from collections import deque
from dataclasses import dataclass, field

from decode.compiler.trace import VERSION

GROUP_STYLES = ["cyan", "magenta", "green", "yellow", "blue", "red"]
# (fill, stroke) per group on the page
GROUP_COLOURS = [("#dbeafe", "#2563eb"), ("#fde68a", "#b45309"), ("#dcfce7", "#15803d"),
                 ("#fce7f3", "#be185d"), ("#ede9fe", "#6d28d9"), ("#cffafe", "#0e7490")]


class TraceError(ValueError):
    """A file that is not a trace written by `decode run --trace`, told with its line."""


@dataclass
class Node:
    id: int | None            # None: the prompt (the root)
    step: int
    token: int | None
    text: str | None
    logp: float | None
    group: int
    finished: bool
    children: list[Node] = field(default_factory=list)
    pruned: list[dict] = field(default_factory=list)      # candidates that were not kept
    returned: list[tuple[int, float | None, str]] = field(default_factory=list)  # (rank, score, finish)


@dataclass
class Trace:
    header: dict
    roots: list[Node]          # one per prompt
    final: dict | None         # None when the run stopped before the end
    kept: int = 0
    candidates: int = 0


def read_trace(path: str) -> Trace:
    """Read a trace file and rebuild its trees.

        >>> t = read_trace("trace.jsonl"); len(t.roots[0].children)
        1
    """
    header, final, nodes, roots = None, None, {}, []
    kept = cands = 0
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise TraceError(f"{path}:{n}: not JSON ({e.msg}); is this a trace written by "
                                 f"`decode run --trace`?") from None
            kind = obj.get("type") if isinstance(obj, dict) else None
            if header is None:
                if kind != "header" or obj.get("trace") != VERSION:
                    raise TraceError(f"{path}:{n}: a trace starts with a header line (trace version "
                                     f"{VERSION}); write one with "
                                     f"`decode run RECIPE --prompt ... --trace {path}`")
                header = obj
                roots = [_root(p) for p in obj.get("prompts", [])]
            elif kind == "cand":
                cands += 1
                kept += _add(obj, nodes, roots, path, n)
            elif kind == "final":
                final = obj
                _mark_returned(obj, nodes, roots)
            else:
                raise TraceError(f"{path}:{n}: unknown line type {kind!r} (expected cand or final)")
    if header is None:
        raise TraceError(f"{path}: empty file, not a trace")
    for root in roots:
        for node in _walk(root):
            node.pruned = _distinct(node)
    return Trace(header, roots, final, kept, cands)


def _distinct(node: Node) -> list[dict]:
    """A node's pruned candidates once per token, leaving out tokens it kept: several rows
    extend the same node when samples (or groups) start from one prompt."""
    seen = {c.token for c in node.children}
    out = []
    for c in node.pruned:
        if c.get("token") not in seen:
            seen.add(c.get("token"))
            out.append(c)
    return out


def _root(prompt: dict) -> Node:
    text = prompt.get("prompt")
    if text is None:
        text = " ".join(map(str, prompt.get("prompt_ids", [])))
    return Node(None, -1, None, text, None, 0, False)


def _add(c: dict, nodes: dict, roots: list[Node], path: str, n: int) -> int:
    try:
        b, ref = int(c["prompt"]), c["parent_node"]
        parent = roots[b] if ref is None else nodes[ref]
    except (KeyError, IndexError, TypeError, ValueError):
        raise TraceError(f"{path}:{n}: candidate extends a node or prompt the trace has not "
                         f"introduced (prompt {c.get('prompt')!r}, "
                         f"parent_node {c.get('parent_node')!r})") from None
    if not c.get("kept"):
        parent.pruned.append(c)
        return 0
    node = Node(c["node"], int(c["step"]), c.get("token"), c.get("text"), c.get("logp"),
                int(c.get("group", 0)), bool(c.get("finished")))
    nodes[node.id] = node
    parent.children.append(node)
    return 1


def _mark_returned(final: dict, nodes: dict, roots: list[Node]) -> None:
    for res in final.get("results", []):
        b = int(res["prompt"])
        for rank, s in enumerate(res.get("sequences", []), 1):
            node = nodes.get(s.get("node"), roots[b] if b < len(roots) else None)
            if node is not None:
                node.returned.append((rank, s.get("score"), s.get("finish", "")))


def shown(text: str | None, token: int | None, space: str = " ") -> str:
    """A token's text made visible: newline ↵, tab ⇥, the id when there is no text."""
    if text is None:
        return f"<{token}>"
    if text == "":
        return "∅"
    return text.replace("\n", "↵").replace("\t", "⇥").replace("\r", "␍").replace(" ", space)


def _fmt(x: float | None) -> str:
    return "?" if x is None else f"{x:.3f}"


# ----------------------------------------------------------------------------- shape

@dataclass
class Shape:
    """Facts about every subtree, for both drawings (keyed by id(node))."""

    last: dict       # the deepest step in the subtree
    rank: dict       # the best returned rank in the subtree (a big number if none)
    vital: dict      # the subtree holds a finished, returned or last-step node


def shape(root: Node) -> Shape:
    order = list(_walk(root))
    end = max((n.step for n in order), default=-1)
    last, rank, vital = {}, {}, {}
    for n in reversed(order):  # children before parents
        kids = n.children
        last[id(n)] = max([n.step] + [last[id(c)] for c in kids])
        rank[id(n)] = min([r for r, _, _ in n.returned] + [rank[id(c)] for c in kids] + [1 << 30])
        vital[id(n)] = bool(n.finished or n.returned or n.step == end or any(vital[id(c)] for c in kids))
    return Shape(last, rank, vital)


def lead(node: Node, sh: Shape) -> Node | None:
    """The child that carries its parent's line on: the one leading to the best returned
    sequence, else the one that lived longest, else the best-ranked."""
    if not node.children:
        return None
    return min(node.children, key=lambda c: (sh.rank[id(c)], -sh.last[id(c)]))


# ----------------------------------------------------------------------------- terminal

def chain(node: Node, sh: Shape) -> list[Node]:
    """`node` and the nodes after it while exactly one child leads somewhere (the others
    were dropped by the search later) and the path neither ends nor returns."""
    out = [node]
    while not out[-1].returned and not out[-1].finished:
        live = [c for c in out[-1].children if sh.vital[id(c)]]
        if len(live) != 1:
            break
        out.append(live[0])
    return out


def render_terminal(trace: Trace, console, pruned: int = 3) -> None:
    """Print each prompt's tree with rich. A line is a run of kept tokens (coloured by
    group) up to the next branch; finished nodes are marked ■, returned sequences ranked.
    Under each line, dimmed, its `pruned` best pruned candidates and the hypotheses that
    were kept for a while and then dropped (0: leave them out)."""
    from rich.text import Text
    from rich.tree import Tree

    h = trace.header
    console.print(Text.assemble(("trace ", "bold"), h["recipe"], (f"  ({h['fingerprint']})", "dim"),
                                (f"  search={h['search']} rows={h['rows']}"
                                 + (f" groups={h['groups']}" if h.get("groups", 1) > 1 else ""), "dim")))
    if trace.final is None:
        console.print(Text("the trace has no final line: the run stopped early", style="yellow"))
    for b, root in enumerate(trace.roots):
        sh = shape(root)
        top = Tree(Text.assemble((f"prompt {b}: ", "bold"), shown(root.text, None)), guide_style="dim")
        _aside(top, [root], sh, pruned)
        _grow(top, root, sh, pruned)
        console.print(top)


def _grow(tree, node: Node, sh: Shape, pruned: int) -> None:
    from rich.text import Text

    for child in node.children:
        if not sh.vital[id(child)]:
            continue
        run = chain(child, sh)
        last = run[-1]
        label = Text()
        for n in run:
            label.append(shown(n.text, n.token), style=GROUP_STYLES[n.group % len(GROUP_STYLES)])
        label.append(f"  [{run[0].step}" + (f"–{last.step}]" if len(run) > 1 else "]"), style="dim")
        if last.finished:
            label.append("  ■ finished", style="bold red")
        for rank, score, finish in last.returned:
            label.append(f"  ← #{rank} score {_fmt(score)} {finish}", style="bold")
        branch = tree.add(label)
        _aside(branch, run, sh, pruned)
        _grow(branch, last, sh, pruned)


def _aside(branch, run: list[Node], sh: Shape, limit: int) -> None:
    """Dimmed lines: the best pruned candidates along `run`, and its dropped hypotheses."""
    from rich.text import Text

    if not limit:
        return
    alts = sorted((c for n in run for c in n.pruned), key=lambda c: -_key(c.get("logp")))
    if alts:
        words = ", ".join(f"{shown(c.get('text'), c.get('token'))!r} {_fmt(c.get('logp'))} @{c['step']}"
                          for c in alts[:limit])
        more = f" (+{len(alts) - limit} more)" if len(alts) > limit else ""
        branch.add(Text(f"✗ pruned: {words}{more}", style="dim"))
    dropped = [c for n in run for c in n.children if not sh.vital[id(c)]]
    if dropped:
        words = ", ".join(f"{_line_text(c, sh)!r} @{c.step}–{sh.last[id(c)]}" for c in dropped[:limit])
        more = f" (+{len(dropped) - limit} more)" if len(dropped) > limit else ""
        branch.add(Text(f"✗ dropped later: {words}{more}", style="dim"))


def _line_text(node: Node, sh: Shape) -> str:
    out = []
    while node is not None:
        out.append(shown(node.text, node.token))
        node = lead(node, sh)
    return "".join(out)


def _key(x: float | None) -> float:
    return x if x is not None else -1e30


# ----------------------------------------------------------------------------- HTML

COL = 92          # px between steps
NODE_W = 62       # node box width
ROW = 30          # px between rows of kept nodes
ROOT_W = 150
TOP = 24          # room above the first row for the step ruler
MAX_DOTS = 5      # pruned candidates drawn per node (the rest summed up in one dot)


def _layout(root: Node, sh: Shape) -> tuple[dict, int, int]:
    """(id(node) -> (x, y), width, height). Steps run left to right. The tree is cut into
    lines (a node and its `lead` child, on and on), each drawn straight on one row, the
    line of the best returned sequence first; every other line goes on the top-most row
    that is free over its steps, so short-lived hypotheses fill the gaps."""
    rows: list[list[tuple[int, int]]] = []     # per row: occupied step intervals
    pos, deepest = {}, -1
    todo = deque([root])
    while todo:
        start = todo.popleft()
        line = [start]
        while line[-1].children:
            line.append(lead(line[-1], sh))
        for n in line:  # the children left behind start lines of their own, best first
            nxt = lead(n, sh)
            todo += sorted((c for c in n.children if c is not nxt), key=lambda c: (sh.rank[id(c)], c.step))
        first, end = line[0].step, line[-1].step + (3 if line[-1].returned else 0)
        row = next((r for r, spans in enumerate(rows)
                    if all(end < lo - 1 or first > hi + 1 for lo, hi in spans)), len(rows))
        if row == len(rows):
            rows.append([])
        rows[row].append((first, end))
        for n in line:
            pos[id(n)] = (12 if n.id is None else _x0(n.step), TOP + row * ROW + ROW // 2)
            deepest = max(deepest, n.step)
    width = int(_x0(deepest) + NODE_W + 240)
    height = TOP + max(len(rows), 1) * ROW + 8
    return pos, width, height


def _svg(root: Node, b: int) -> str:
    sh = shape(root)
    pos, width, height = _layout(root, sh)
    edges, dots, boxes = [], [], []
    best_path = _returned_path(root)
    steps = max((n.step for n in _walk(root)), default=-1) + 1
    ruler = [f'<text class="ruler" x="{_x0(s) + NODE_W / 2:.0f}" y="14">{s}</text>'
             for s in range(0, steps, 1 if steps <= 40 else 5)]
    for node in _walk(root):
        x, y = pos[id(node)]
        w = ROOT_W if node.id is None else NODE_W
        for c in node.children:
            cx, cy = pos[id(c)]
            cls = "edge best" if id(c) in best_path else "edge"
            mid = (x + w + cx) / 2
            edges.append(f'<path class="{cls}" d="M{x + w},{y} C{mid},{y} {mid},{cy} {cx},{cy}"/>')
        dots += _pruned_dots(node, x + w, y)
        boxes.append(_box(node, x, y, w, b))
    return (f'<svg class="tree" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="search tree of prompt {b}">'
            + "".join(ruler) + "".join(edges) + "".join(dots) + "".join(boxes) + "</svg>")


def _x0(step: int) -> float:
    return 12 + ROOT_W + 24 + step * COL


def _walk(root: Node):
    stack = [root]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(n.children))


def _returned_path(root: Node) -> set[int]:
    """id()s of the nodes on the path to the rank-1 sequence."""
    parent, target = {}, None
    for n in _walk(root):
        for c in n.children:
            parent[id(c)] = n
        if any(rank == 1 for rank, _, _ in n.returned):
            target = n
    path = set()
    while target is not None and target is not root:
        path.add(id(target))
        target = parent.get(id(target))
    return path


def _pruned_dots(node: Node, x: float, y: float) -> list[str]:
    out = []
    alts = sorted(node.pruned, key=lambda c: -_key(c.get("logp")))
    shown_alts, rest = alts[:MAX_DOTS], alts[MAX_DOTS:]
    for i, c in enumerate(shown_alts):
        ex, ey = x + 24, y + 4 + 5 * (i + 1)
        title = (f"pruned at step {c['step']}: {c.get('text')!r} (token {c.get('token')}) "
                 f"logp {_fmt(c.get('logp'))}, group {c.get('group', 0)}"
                 + (", would have finished" if c.get("finished") else ""))
        out.append(f'<g class="pruned"><title>{html.escape(title)}</title>'
                   f'<line x1="{x}" y1="{y}" x2="{ex}" y2="{ey}"/><circle cx="{ex}" cy="{ey}" r="2.5"/></g>')
    if rest:
        ex, ey = x + 24, y + 4 + 5 * (len(shown_alts) + 1)
        title = f"{len(rest)} more pruned: " + ", ".join(
            f"{c.get('text')!r} {_fmt(c.get('logp'))}" for c in rest[:20])
        out.append(f'<g class="pruned more"><title>{html.escape(title)}</title>'
                   f'<text x="{ex + 4}" y="{ey + 3}">+{len(rest)}</text></g>')
    return out


def _box(node: Node, x: float, y: float, w: int, b: int) -> str:
    if node.id is None:
        label = shown(node.text, None)
        label = label if len(label) <= 22 else label[:21] + "…"
        return (f'<g class="root"><title>{html.escape(f"prompt {b}: {node.text!r}")}</title>'
                f'<rect x="{x}" y="{y - 11}" width="{w}" height="22" rx="4"/>'
                f'<text x="{x + 6}" y="{y + 4}">{html.escape(label)}</text></g>' + _ranks(node, x + w, y))
    fill, stroke = GROUP_COLOURS[node.group % len(GROUP_COLOURS)]
    label = shown(node.text, node.token, "·")
    label = label if len(label) <= 8 else label[:7] + "…"
    title = (f"step {node.step}: {node.text!r} (token {node.token}) logp {_fmt(node.logp)}, "
             f"group {node.group}" + (", finished" if node.finished else ""))
    cls = "node kept" + (" finished" if node.finished else "")
    return (f'<g class="{cls}" data-node="{node.id}" data-step="{node.step}" data-group="{node.group}">'
            f'<title>{html.escape(title)}</title>'
            f'<rect x="{x}" y="{y - 11}" width="{w}" height="22" rx="4" fill="{fill}" stroke="{stroke}"/>'
            f'<text x="{x + w / 2}" y="{y + 4}" text-anchor="middle">{html.escape(label)}</text></g>'
            + _ranks(node, x + w, y))


def _ranks(node: Node, x: float, y: float) -> str:
    if not node.returned:
        return ""
    words = "  ".join(f"#{r} {_fmt(s)} {f}" for r, s, f in node.returned)
    return f'<text class="rank" x="{x + 8}" y="{y + 4}">{html.escape(words)}</text>'


CSS = """
body { font: 14px system-ui, sans-serif; margin: 16px; color: #111; background: #fff; }
h1 { font-size: 18px; margin: 0 0 4px; } code { background: #f3f4f6; padding: 1px 4px; }
.meta { color: #555; margin-bottom: 8px; }
.legend { display: flex; gap: 16px; flex-wrap: wrap; margin: 8px 0 12px; font-size: 13px; }
.legend span { display: inline-flex; align-items: center; gap: 6px; }
.sw { width: 18px; height: 12px; border: 1.5px solid; border-radius: 3px; display: inline-block; }
.scroll { overflow: auto; border: 1px solid #e5e7eb; border-radius: 6px; margin-bottom: 20px; }
svg text { font: 11px ui-monospace, Menlo, Consolas, monospace; white-space: pre; }
.ruler { fill: #9ca3af; text-anchor: middle; }
.edge { fill: none; stroke: #9ca3af; stroke-width: 1.3; }
.edge.best { stroke: #111; stroke-width: 2.5; }
.node rect { stroke-width: 1.3; } .node:hover rect { stroke-width: 3; }
.node.finished rect { stroke: #b91c1c; stroke-width: 2.5; }
.root rect { fill: #f3f4f6; stroke: #374151; } .root text { font-weight: bold; }
.pruned line { stroke: #d1d5db; stroke-dasharray: 2 2; } .pruned circle { fill: #9ca3af; }
.pruned:hover circle { fill: #111; r: 4; } .pruned.more text { fill: #9ca3af; font-size: 9px; }
.rank { font-weight: bold; fill: #111; }
"""


def render_html(trace: Trace) -> str:
    """One self-contained page (inline CSS and SVG; no scripts, no network)."""
    h = trace.header
    groups = int(h.get("groups", 1))
    legend = [f'<span><i class="sw" style="background:{f};border-color:{s}"></i>'
              f'{"group " + str(g) if groups > 1 else "kept token"}</span>'
              for g, (f, s) in enumerate(GROUP_COLOURS[:max(groups, 1)])]
    legend += ['<span><i class="sw" style="background:#fff;border-color:#b91c1c;border-width:2.5px"></i>'
               'finished (EOS or last step)</span>',
               '<span><svg width="30" height="12"><line x1="0" y1="2" x2="22" y2="9" stroke="#d1d5db" '
               'stroke-dasharray="2 2"/><circle cx="23" cy="9" r="2.5" fill="#9ca3af"/></svg>pruned '
               'candidate (hover for token and log-prob)</span>',
               '<span><svg width="30" height="12"><line x1="0" y1="6" x2="30" y2="6" stroke="#111" '
               'stroke-width="2.5"/></svg>path of the best returned sequence</span>']
    parts = [f"<h1>decode trace: <code>{html.escape(h['recipe'])}</code></h1>",
             f'<div class="meta">fingerprint {html.escape(str(h["fingerprint"]))} · search '
             f'{html.escape(str(h["search"]))} · {h["rows"]} rows per prompt'
             + (f" · {groups} groups" if groups > 1 else "")
             + f" · {trace.kept} kept of {trace.candidates} candidates · hover a node for its log-prob</div>",
             f'<div class="legend">{"".join(legend)}</div>']
    if trace.final is None:
        parts.append('<p class="meta">The trace has no final line: the run stopped before the end.</p>')
    for b, root in enumerate(trace.roots):
        parts.append(f"<h2>prompt {b}: <code>{html.escape(root.text or '')}</code></h2>")
        parts.append(f'<div class="scroll">{_svg(root, b)}</div>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>decode trace: {html.escape(h['recipe'])}</title><style>{CSS}</style></head>"
            f"<body>{''.join(parts)}</body></html>\n")
