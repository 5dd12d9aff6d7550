"""Draw a search trace (see `record.py`) as a tree: in the terminal, or as one HTML page.

    $ decode viz trace.jsonl                  # rich Tree on stdout
    $ decode viz trace.jsonl --html tree.html # one self-contained page, inline SVG

Nodes are kept tokens, pruned candidates hang off the node they would have extended
(dimmed), finished nodes are marked, diverse groups get a colour each, and the returned
sequences are ranked at their last node. Imports no torch: drawing a trace is fast.
"""
from __future__ import annotations

import bisect
import contextlib
import html
import json
import os
import secrets
import stat
from collections import deque
from dataclasses import dataclass, field

from decode.traces.record import VERSION, brief, problem, replace_problem

GROUP_STYLES = ["cyan", "magenta", "green", "yellow", "blue", "red"]
# (fill, stroke) per group on the page
GROUP_COLOURS = [("#dbeafe", "#2563eb"), ("#fde68a", "#b45309"), ("#dcfce7", "#15803d"),
                 ("#fce7f3", "#be185d"), ("#ede9fe", "#6d28d9"), ("#cffafe", "#0e7490")]


class TraceError(ValueError):
    """A file that is not a trace written by `decode run --trace`, told with its line."""


# the fix, said after what is wrong with a line
REDO = ("the file is not as `decode run --trace` wrote it (edited, or damaged?): record it "
        "again with `decode run RECIPE --prompt TEXT --trace {path}`")
MAX_LINE = 64 << 20  # bytes; a trace line is a step's candidate, or the header or final line


@dataclass(eq=False)  # identity: comparing two trees field by field would walk them whole
class Node:
    id: int | None            # None: the prompt (the root)
    step: int
    token: int | None
    text: str | None
    logp: float | None
    group: int
    finished: bool
    prompt: int = 0
    line: int = 0             # where the trace introduced it
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
    torn: int | None = None    # the number of a cut-short last line that was left out


def read_trace(path: str) -> Trace:
    """Read a trace file and rebuild its trees; a line that is not as `decode run --trace`
    writes it (see `trace.SHAPES`) is a TraceError naming the file and line. A last line
    cut short (the run was killed while writing it) is left out and counted in `torn`.

        >>> t = read_trace("trace.jsonl"); len(t.roots[0].children)
        1
    """
    build = _Builder(path)
    with open(path, "rb") as f:
        for n, line in _lines(f, build):
            build.add(line, n)
    return build.done()


def _lines(f, build: "_Builder"):
    """(line number, parsed JSON) of each non-blank line, read with a bounded length."""
    n = 0
    while raw := f.readline(MAX_LINE):
        n += 1
        if len(raw) >= MAX_LINE and not raw.endswith(b"\n"):
            raise build.error(n, f"the line is longer than {MAX_LINE >> 20} MiB")
        try:
            text = raw.decode("utf-8")
            line = json.loads(text) if text.strip() else _BLANK
        except RecursionError:
            raise build.error(n, "the JSON nests too deeply") from None
        except ValueError as e:  # not UTF-8, not JSON, or an integer of thousands of digits
            if not raw.endswith(b"\n") and build.header is not None:  # a killed writer's last line
                build.torn = n
                return
            raise build.error(n, _unreadable(raw, e)) from None
        if line is not _BLANK:
            yield n, line


_BLANK = object()


def _unreadable(raw: bytes, e: ValueError) -> str:
    if isinstance(e, UnicodeDecodeError):
        return f"byte {raw[e.start]:#04x} at column {e.start + 1} is not UTF-8"
    if isinstance(e, json.JSONDecodeError):
        return f"not JSON ({e.msg} at column {e.colno})"
    return f"not JSON ({e})"


class _Builder:
    """Checks each line against its shape and against the lines before it, and grows the
    trees; every complaint is a TraceError with the file and line."""

    def __init__(self, path: str):
        self.path = path
        self.header: dict | None = None
        self.final: dict | None = None
        self.final_line = 0
        self.roots: list[Node] = []
        self.nodes: dict[int, Node] = {}
        self.kept = self.candidates = 0
        self.torn: int | None = None

    def error(self, n: int, what: str) -> TraceError:
        return TraceError(f"{self.path}:{n}: {what}; {REDO.format(path=self.path)}")

    def add(self, line, n: int) -> None:
        if self.header is None:
            return self._header(line, n)
        wrong = problem(line)
        if wrong:
            raise self.error(n, wrong)
        if line["type"] == "header":
            raise self.error(n, "a second header line (a trace records one run)")
        if self.final is not None:
            raise self.error(n, f"a line after the final line {self.final_line}")
        if line["type"] == "cand":
            self._cand(line, n)
        else:
            self._final(line, n)

    def _header(self, line, n: int) -> None:
        if not isinstance(line, dict) or line.get("type") != "header":
            raise TraceError(f"{self.path}:{n}: a trace starts with a header line (trace version "
                             f"{VERSION}); write one with `decode run RECIPE --prompt ... --trace "
                             f"{self.path}`")
        if line.get("trace") != VERSION:
            raise self.error(n, f"trace version {brief(line.get('trace'))} is not {VERSION}, the "
                                f"one this decode reads")
        wrong = problem(line)
        if wrong:
            raise self.error(n, wrong)
        self.header = line
        self.roots = [_root(p, b) for b, p in enumerate(line["prompts"])]

    def _cand(self, c: dict, n: int) -> None:
        if c["prompt"] >= len(self.roots):
            raise self.error(n, f'"prompt" {c["prompt"]} is not in the header (it lists '
                                f'{len(self.roots)} prompt{"s" if len(self.roots) != 1 else ""})')
        parent = self._node(c["parent_node"], c["prompt"], n, "parent_node")
        if c["step"] != parent.step + 1:
            raise self.error(n, f'"step" {c["step"]} does not follow step {parent.step} of the node '
                                f'it extends (a candidate extends a node of the step before)')
        self.candidates += 1
        if not c["kept"]:
            parent.pruned.append(c)
            return
        if c["node"] is None:
            raise self.error(n, 'a kept candidate needs a "node" id, got null')
        if c["node"] in self.nodes:
            raise self.error(n, f'node {c["node"]} was already introduced on line '
                                f'{self.nodes[c["node"]].line}')
        node = Node(c["node"], c["step"], c["token"], c["text"], c["logp"], c["group"],
                    c["finished"], c["prompt"], n)
        self.nodes[node.id] = node
        parent.children.append(node)
        self.kept += 1

    def _node(self, ref: int | None, b: int, n: int, key: str) -> Node:
        """The prompt's root (ref None) or the node `ref` of prompt `b`, introduced earlier."""
        if ref is None:
            return self.roots[b]
        node = self.nodes.get(ref)
        if node is None:
            raise self.error(n, f'"{key}" {ref} is no node introduced on an earlier line')
        if node.prompt != b:
            raise self.error(n, f'"{key}" {ref} is a node of prompt {node.prompt}, not of prompt {b}')
        return node

    def _final(self, final: dict, n: int) -> None:
        for i, res in enumerate(final["results"]):
            b = res["prompt"]
            if b >= len(self.roots):
                raise self.error(n, f'"results[{i}].prompt" {b} is not in the header')
            for rank, s in enumerate(res["sequences"], 1):
                node = self._node(s["node"], b, n, f"results[{i}].sequences[{rank - 1}].node")
                node.returned.append((rank, s["score"], s["finish"] + drafts(s.get("speculative"))))
        self.final, self.final_line = final, n

    def done(self) -> Trace:
        if self.header is None:
            raise TraceError(f"{self.path}: an empty file, not a trace; write one with "
                             f"`decode run RECIPE --prompt ... --trace {self.path}`")
        for root in self.roots:
            for node in _walk(root):
                node.pruned = _distinct(node)
        return Trace(self.header, self.roots, self.final, self.kept, self.candidates, self.torn)


def _distinct(node: Node) -> list[dict]:
    """A node's pruned candidates once per token, leaving out tokens it kept: several rows
    extend the same node when samples (or groups) start from one prompt."""
    seen = {c.token for c in node.children}
    out = []
    for c in node.pruned:
        if c["token"] not in seen:
            seen.add(c["token"])
            out.append(c)
    return out


def _root(prompt: dict, b: int) -> Node:
    text = prompt["prompt"]
    if text is None:
        text = " ".join(map(str, prompt["prompt_ids"]))
    return Node(None, -1, None, text, None, 0, False, b)


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
    were kept for a while and then dropped (0: leave them out). A tree nested deeper than
    the console is wide goes on in a part of its own, so nothing is cut off."""
    from rich.text import Text
    from rich.tree import Tree

    h = trace.header
    console.print(Text.assemble(("trace ", "bold"), h["recipe"], (f"  ({h['fingerprint']})", "dim"),
                                (f"  search={h['search']} rows={h['rows']}"
                                 + (f" groups={h['groups']}" if h["groups"] > 1 else ""), "dim")))
    if trace.torn is not None:
        console.print(Text(f"line {trace.torn} is cut short (the run was stopped while writing it) "
                           f"and left out", style="yellow"))
    if trace.final is None:
        console.print(Text("the trace has no final line: the run stopped early", style="yellow"))
    depth = max(4, (console.width - 24) // 4)  # rich indents 4 columns a level
    for b, root in enumerate(trace.roots):
        sh = shape(root)
        top = Tree(Text.assemble((f"prompt {b}: ", "bold"), shown(root.text, None)), guide_style="dim")
        _aside(top, [root], sh, pruned)
        parts, made = deque([(top, root)]), 1
        while parts:
            tree, node = parts.popleft()
            for line, last in _grow(tree, node, sh, pruned, depth):
                made += 1
                title = Text.assemble((f"prompt {b}, part {made}: ", "bold"), "… ", line, (" goes on", "dim"))
                line.append(f"  ↪ part {made}", style="bold")
                parts.append((Tree(title, guide_style="dim"), last))
            console.print(tree)


def _grow(tree, node: Node, sh: Shape, pruned: int, depth: int) -> list[tuple]:
    """Add the lines under `node` to `tree`, at most `depth` levels deep; returns (label,
    node) of each line whose subtree did not fit, to be drawn as a part of its own."""
    from rich.text import Text

    cut, todo = [], [(tree, node, 0)]
    while todo:  # a loop, not recursion: a trace may branch thousands of times in a row
        branch, node, level = todo.pop()
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
            sub = branch.add(label)
            _aside(sub, run, sh, pruned)
            if any(sh.vital[id(c)] for c in last.children):
                if level + 1 < depth:
                    todo.append((sub, last, level + 1))
                else:
                    cut.append((label, last))
    return cut


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
    rows: list[list[tuple[int, int]]] = []     # per row: occupied step intervals, sorted
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
        row = next((r for r, spans in enumerate(rows) if _fits(spans, first, end)), len(rows))
        if row == len(rows):
            rows.append([])
        bisect.insort(rows[row], (first, end))
        for n in line:
            pos[id(n)] = (12 if n.id is None else _x0(n.step), TOP + row * ROW + ROW // 2)
            deepest = max(deepest, n.step)
    width = int(_x0(deepest) + NODE_W + 240)
    height = TOP + max(len(rows), 1) * ROW + 8
    return pos, width, height


def _fits(spans: list[tuple[int, int]], first: int, end: int) -> bool:
    """Whether steps first..end leave a free step beside each of a row's spans (sorted and
    apart, so only the neighbours of the place `first` would take need a look)."""
    i = bisect.bisect_left(spans, (first, first))
    return (i == 0 or spans[i - 1][1] < first - 1) and (i == len(spans) or spans[i][0] > end + 1)


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
            f'preserveAspectRatio="xMinYMin meet" role="img" aria-label="search tree of prompt {b}">'
            + "".join(ruler) + "".join(edges) + "".join(dots) + "".join(boxes) + "</svg>")


def _x0(step: int) -> float:
    return 12 + ROOT_W + 24 + step * COL


def _walk(root: Node):
    stack = [root]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(n.children))


def drafts(spec) -> str:
    """' · A/P drafts accepted in N rounds' for a speculative sequence's record, else ''
    (a record of another shape is not shown: keys beyond the trace's shapes are free).

        >>> drafts({"proposed": [4, 4], "accepted": [4, 1]})
        ' · 5/8 drafts accepted in 2 rounds'
    """
    if not isinstance(spec, dict):
        return ""
    p, a = spec.get("proposed"), spec.get("accepted")
    if not (isinstance(p, list) and isinstance(a, list) and len(p) == len(a)
            and all(type(x) is int for x in p + a)):
        return ""
    return f" · {sum(a)}/{sum(p)} drafts accepted in {len(p)} round{'s' * (len(p) != 1)}"


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


# how every page begins: an existing --html file is replaced only if it is such a page
PAGE_START = '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>decode trace: '
CSS = """
body { font: 14px system-ui, sans-serif; margin: 16px; color: #111; background: #fff; }
h1 { font-size: 18px; margin: 0 0 4px; } code { background: #f3f4f6; padding: 1px 4px; }
.meta { color: #555; margin-bottom: 8px; }
.legend { display: flex; gap: 16px; flex-wrap: wrap; margin: 8px 0 12px; font-size: 13px; }
.legend span { display: inline-flex; align-items: center; gap: 6px; }
.sw { width: 18px; height: 12px; border: 1.5px solid; border-radius: 3px; display: inline-block; }
.scroll { overflow: hidden; border: 1px solid #e5e7eb; border-radius: 6px; margin-bottom: 20px; }
.scroll svg.tree { display: block; width: 100%; height: auto; max-height: 85vh; cursor: grab;
                   touch-action: none; user-select: none; }
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


# Zoom and pan: the tree is drawn to fit the window; the wheel zooms about the pointer, a drag
# pans, a double click fits it again. It moves the SVG's viewBox only (the page works without it).
SCRIPT = """
document.querySelectorAll('svg.tree').forEach(function (svg) {
  var home = svg.getAttribute('viewBox'), v = home.split(' ').map(Number), grab = null;
  function at(e) {
    var p = svg.createSVGPoint(); p.x = e.clientX; p.y = e.clientY;
    return p.matrixTransform(svg.getScreenCTM().inverse());
  }
  function show() { svg.setAttribute('viewBox', v.join(' ')); }
  svg.addEventListener('wheel', function (e) {
    e.preventDefault();
    var p = at(e), k = e.deltaY < 0 ? 0.8 : 1.25;
    v = [p.x - (p.x - v[0]) * k, p.y - (p.y - v[1]) * k, v[2] * k, v[3] * k]; show();
  }, {passive: false});
  svg.addEventListener('pointerdown', function (e) { grab = at(e); svg.setPointerCapture(e.pointerId); });
  svg.addEventListener('pointermove', function (e) {
    if (!grab) return;
    var p = at(e); v[0] -= p.x - grab.x; v[1] -= p.y - grab.y; show();
  });
  svg.addEventListener('pointerup', function () { grab = null; });
  svg.addEventListener('dblclick', function () { v = home.split(' ').map(Number); show(); });
});
"""


def render_html(trace: Trace) -> str:
    """One self-contained page (inline CSS, SVG and a small script to zoom and pan; no network)."""
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
             + f" · {trace.kept} kept of {trace.candidates} candidates · hover a node for its log-prob"
             " · wheel to zoom, drag to pan, double-click to fit</div>",
             f'<div class="legend">{"".join(legend)}</div>']
    if trace.torn is not None:
        parts.append(f'<p class="meta">Line {trace.torn} of the trace is cut short (the run was stopped '
                     f'while writing it) and left out.</p>')
    if trace.final is None:
        parts.append('<p class="meta">The trace has no final line: the run stopped before the end.</p>')
    for b, root in enumerate(trace.roots):
        parts.append(f"<h2>prompt {b}: <code>{html.escape(root.text or '')}</code></h2>")
        parts.append(f'<div class="scroll">{_svg(root, b)}</div>')
    return (PAGE_START + f"{html.escape(h['recipe'])}</title><style>{CSS}</style></head>"
            f"<body>{''.join(parts)}<script>{SCRIPT}</script></body></html>\n")


# ----------------------------------------------------------------------------- writing

def page_problem(page: str, trace: str) -> str | None:
    """Why the page may not be written to `page`, or None. Refused: the trace itself (also
    through a link), anything but a regular file, and a file that is not a page of ours,
    so that nothing a user has is overwritten.

        >>> page_problem("t.jsonl", "t.jsonl").split(":")[0]
        '--html t.jsonl is the trace itself'
    """
    folder = os.path.dirname(os.path.abspath(page))
    if not os.path.isdir(folder):
        return f"--html {page}: the folder {folder} does not exist"
    if os.path.exists(page) and os.path.exists(trace) and os.path.samefile(page, trace):
        return (f"--html {page} is the trace itself: writing the page would destroy it; give the "
                f"page another name, e.g. --html {os.path.splitext(page)[0]}.html")
    return replace_problem("--html", page, "a page `decode viz` wrote", ".html",
                           lambda f: f.read(len(PAGE_START.encode())) == PAGE_START.encode())


def write_page(page: str, text: str) -> None:
    """Write `text` to `page` atomically: into a new file beside it, then renamed over it,
    so a failure (a full disk, Ctrl-C) leaves the old page, or none, never half of one. A
    link is followed: its target is replaced."""
    target = os.path.realpath(page)
    tmp = f"{target}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(target):
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
