"""MkDocs hook: fills the generated pages from the files the tools write.

``<!-- generated: guarantees -->`` becomes the table of ``docs/generated/verify.json``
(written by ``samplers verify --full --json docs/generated/verify.json --markdown
docs/generated/guarantees.md``), and
``<!-- generated: bench -->`` the report ``docs/generated/bench/report.md`` (written by
``samplers bench --out docs/generated/bench``). A missing file is a warning, so
``mkdocs build --strict`` fails rather than publish an empty page.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

GENERATED = Path(__file__).resolve().parents[1] / "generated"
log = logging.getLogger("mkdocs.hooks.generated")


def _guarantees() -> str:
    from samplers.verify import Result, markdown_report

    data = json.loads((GENERATED / "verify.json").read_text())
    rows = [Result(**{k: (math.nan if v is None and k in ("measured", "theory") else v)
                      for k, v in row.items()}) for row in data["results"]]
    return markdown_report(rows, data)


def _bench() -> str:
    text = (GENERATED / "bench" / "report.md").read_text()
    lines = text.splitlines()
    if lines and lines[0].startswith("# "):  # the page has its own title
        lines = lines[1:]
    return "\n".join(lines)


SECTIONS = {"<!-- generated: guarantees -->": _guarantees, "<!-- generated: bench -->": _bench}


def on_page_markdown(markdown, page, config, files):
    for marker, render in SECTIONS.items():
        if marker in markdown:
            try:
                markdown = markdown.replace(marker, render())
            except FileNotFoundError as exc:
                log.warning(f"{page.file.src_path}: generated content missing ({exc.filename}); "
                            "run the command named at the top of docs/hooks/generated.py")
    return markdown
