"""Rendering: formatting helpers and the document blocks written as Markdown and as HTML.

A document is a list of blocks, each rendered by both :func:`render_markdown` and
:func:`render_html` (self-contained apart from the files it links)::

    ("h1"|"h2"|"h3"|"p"|"note", text) | ("table", headers, rows) | ("img", src, alt) | ("list", items)

Table cells and list items are text or a :class:`Link` (an ``<audio>`` player too when ``audio``).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

from advaudio.reporting.analysis import finite_number

__all__ = ["Block", "Link", "fmt_num", "fmt_pct", "fmt_pp", "fmt_ratio", "render_html", "render_markdown"]


def fmt_pct(v: Any) -> str:
    """A fraction as a percentage with one decimal (``0.6667`` → ``66.7 %``); ``—`` when missing."""
    v = finite_number(v)
    return "—" if v is None else f"{100.0 * v:.1f} %"


def fmt_pp(v: Any) -> str:
    """A difference of fractions in percentage points (``-0.05`` → ``-5.0 pp``)."""
    v = finite_number(v)
    return "—" if v is None else f"{100.0 * v:+.1f} pp"


def fmt_num(v: Any, digits: int = 4) -> str:
    v = finite_number(v)
    return "—" if v is None else f"{v:.{digits}g}"


def fmt_ratio(v: Any) -> str:
    v = finite_number(v)
    return "—" if v is None else f"×{v:.3g}"


@dataclass
class Link:
    text: str
    href: str
    audio: bool = False


# Blocks: ("h1"|"h2"|"h3"|"p"|"note", text) | ("table", headers, rows) | ("img", src, alt) | ("list", items)
Block = tuple


def _md_cell(c: Any) -> str:
    if isinstance(c, Link):
        href = f"<{c.href}>" if any(ch in c.href for ch in " ()") else c.href
        return f"[{c.text}]({href})"
    return str(c).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + b[1])
        elif kind == "p":
            out.append(b[1])
        elif kind == "note":
            out.append("> " + b[1].replace("\n", "\n> "))
        elif kind == "list":
            out.append("\n".join(f"- {_md_cell(i) if isinstance(i, Link) else i}" for i in b[1]))
        elif kind == "img":
            out.append(f"![{b[2]}]({b[1]})")
        elif kind == "table":
            headers, rows = b[1], b[2]
            lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |",
                     "|" + "|".join("---" for _ in headers) + "|"]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("\n".join(lines))
        out.append("")
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:72rem;margin:2rem auto;
padding:0 1rem;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:0.6rem 0 1.2rem;font-size:0.9rem}
th,td{border:1px solid #ccc;padding:0.25rem 0.55rem;text-align:left;vertical-align:top}
th{background:#f2f2f2} tr:nth-child(even) td{background:#fafafa}
img{max-width:100%;border:1px solid #ddd;margin:0.4rem 0 1rem}
blockquote{border-left:4px solid #9ab;margin:0.8rem 0;padding:0.2rem 0.9rem;background:#f5f8fa}
audio{height:2rem;vertical-align:middle} code{background:#f2f2f2;padding:0 0.2rem}
""".strip()


def _html_cell(c: Any) -> str:
    if isinstance(c, Link):
        href = html.escape(c.href, quote=True)
        link = f'<a href="{href}">{html.escape(c.text)}</a>'
        if c.audio:
            return f'<audio controls preload="none" src="{href}"></audio> {link}'
        return link
    return html.escape(str(c))


def render_html(blocks: list[Block], *, title: str) -> str:
    body = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{html.escape(b[1])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{html.escape(b[1])}</p>")
        elif kind == "note":
            body.append("<blockquote>" + "<br>".join(html.escape(line) for line in b[1].split("\n"))
                        + "</blockquote>")
        elif kind == "list":
            body.append("<ul>" + "".join(f"<li>{_html_cell(i)}</li>" for i in b[1]) + "</ul>")
        elif kind == "img":
            body.append(f'<img src="{html.escape(b[1], quote=True)}" alt="{html.escape(b[2], quote=True)}">')
        elif kind == "table":
            head = "".join(f"<th>{_html_cell(h)}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{_html_cell(c)}</td>" for c in row) + "</tr>" for row in b[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
