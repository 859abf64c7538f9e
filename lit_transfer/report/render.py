"""The report's files: report.md, a self-contained report.html (figures inlined), summary.csv and summary.json,
plus any extra :class:`Section` another part of the package adds (e.g. the ranking check of
:mod:`lit_transfer.ranking.compare`)."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from lit_transfer import atomic
from lit_transfer.report.charts import plots
from lit_transfer.report.tables import STAGE_HEADER, markdown, stage_table, table

__all__ = ["Section", "html_report", "write_report"]


@dataclass(frozen=True)
class Section:
    """An extra part of the report, rendered by whoever computes it: ``markdown`` is appended to report.md (after a
    blank line), ``html`` is placed at the end of report.html's body, ``console`` is what the command prints.
    An empty ``markdown``/``html`` adds nothing to that file (e.g. a note that the part was left out)."""

    markdown: str = ""
    html: str = ""
    console: str = ""


def html_report(summary: dict, images: Iterable[Path], source: str, sections: Sequence[Section] = ()) -> str:
    """report.html: the tables, the notes, every figure inlined as a data URI, then the extra sections."""
    header, body = table(summary)
    esc = html.escape
    rows_html = "".join(
        "<tr%s>%s</tr>" % (' class="neg"' if r.get("negative_transfer") else "",
                           "".join(f"<td>{esc(c.replace('**', ''))}</td>" for c in cells))
        for r, cells in zip(summary["rows"], body))
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>lit_transfer report</title><style>",
        "body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;font-size:14px}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:nth-child(-n+2),th{text-align:left}"
        "tr.neg{background:#fde2e2}img{max-width:100%;margin:1em 0}",
        "</style></head><body>",
        f"<h1>Transfer report</h1><p>{esc(source)} — gains are paired on (seed, target_shots, split_hash); "
        "negative transfer means the whole confidence interval of the gain lies below zero.</p>",
        "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>" + rows_html + "</table>",
    ]
    if summary["stages"]:
        parts.append("<h2>Source stages</h2><p>The rows under \"used by\" loaded exactly these checkpoints.</p>"
                     "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in STAGE_HEADER) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>" for cells in stage_table(summary)]
        parts.append("</table>")
    if summary["notes"]:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in summary["notes"]) + "</ul>")
    for img in images:
        data = base64.b64encode(Path(img).read_bytes()).decode()
        parts.append(f"<h2>{esc(Path(img).stem)}</h2><img alt='{esc(Path(img).stem)}' "
                     f"src='data:image/png;base64,{data}'>")
    parts.append("".join(s.html for s in sections) + "</body></html>\n")
    return "\n".join(parts)


def _markdown_file(summary: dict, images: Iterable[Path], source: str, sections: Sequence[Section]) -> str:
    """report.md: the tables and notes, links to the figures, then the extra sections."""
    return (f"# Transfer report\n\n{source}\n\n" + markdown(summary)
            + "".join(f"\n![{p.stem}]({p.name})\n" for p in images)
            + "".join("\n" + s.markdown for s in sections if s.markdown))


def _csv(rows: list[dict]) -> str:
    """summary.csv: one line per comparison row, every key any row has as a column."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_report(summary: dict, out: Path, source: str, sections: Sequence[Section] = ()) -> dict[str, Path]:
    """Draw the figures and write report.md, report.html, summary.json and summary.csv under ``out``; ``source``
    says what was read, ``sections`` are added after the report's own parts. Returns the files by kind."""
    out.mkdir(parents=True, exist_ok=True)
    images = plots(summary, out)
    files = {"md": out / "report.md", "html": out / "report.html", "csv": out / "summary.csv",
             "json": out / "summary.json"}
    atomic.write_text(files["md"], _markdown_file(summary, images, source, sections))
    atomic.write_text(files["html"], html_report(summary, images, source, sections))
    atomic.write_text(files["json"], json.dumps(summary, indent=2, default=str) + "\n")
    atomic.write_text(files["csv"], _csv(summary["rows"]))
    return files
