"""Write a benchmark's figures into docs/benchmarks.md, between its own markers.

Each script owns one section, ``<!-- BEGIN name -->`` … ``<!-- END name -->``; rerunning the
script replaces that section and nothing else, so the page is always what the scripts last
measured (with the machine and date the script records).
"""

from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path

PAGE = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def machine() -> str:
    """One line naming where the figures were measured."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{platform.machine()}, {cores} cores, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"


def write_section(name: str, title: str, body: str, command: str, page: Path = PAGE) -> None:
    """Replace (or append) section ``name`` of the benchmarks page with ``body`` (markdown)."""
    block = (f"<!-- BEGIN {name} -->\n## {title}\n\n`{command.strip()}` — {machine()}\n\n{body.strip()}\n"
             f"<!-- END {name} -->")
    text = page.read_text(encoding="utf-8") if page.exists() else "# Benchmarks\n"
    pat = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S)
    text = pat.sub(lambda _m: block, text) if pat.search(text) else text.rstrip("\n") + "\n\n" + block + "\n"
    tmp = page.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(page)


def recall_table(caption: str, columns: dict[str, dict[str, float]]) -> list[str]:
    """Markdown lines of a per-class recall table: one row per class (in the first column's
    order), one column per run (``columns``: heading -> {class: recall}); a class a run lacks
    shows as 0 %. Shared by the transfer benchmarks so their tables read the same."""
    if not columns:
        return []
    classes = list(next(iter(columns.values())))
    lines = ["", caption, "", "| class | " + " | ".join(columns) + " |",
             "|---|" + "---|" * len(columns)]
    for c in classes:
        lines.append(f"| {c} | " + " | ".join(f"{r.get(c, 0):.0%}" for r in columns.values())
                     + " |")
    return lines
