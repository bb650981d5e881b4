"""Result tables written three ways at once: Markdown to read, CSV to load, JSON for every column."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from prismlab.io import atomic_write_json, atomic_write_text


def write_table(rows: list[dict], stem: Path) -> None:
    keys = [k for k in rows[0] if "/" not in k]  # per-class columns stay in the JSON only
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append(
            "| " + " | ".join(f"{row[k]:.4f}" if isinstance(row[k], float) else str(row[k]) for k in keys) + " |"
        )
    atomic_write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(stem.with_suffix(".csv"), buffer.getvalue())
    atomic_write_json(stem.with_suffix(".json"), rows)
