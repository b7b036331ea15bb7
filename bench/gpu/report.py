"""Merge the steps' records (OUT/steps/*.json) into OUT/gpu_results.json and OUT/gpu_results.md, named after the
card. Run by bench/gpu.sh after the last step; `python bench/gpu/report.py --out OUT` re-runs it."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return str(value)


def markdown_table(rows: list[dict]) -> list[str]:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(cell(row.get(column)) for column in columns) + " |" for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "/tmp/fastforget-gpu"))
    args = parser.parse_args()
    steps = [json.loads(path.read_text()) for path in sorted((args.out / "steps").glob("*.json"))]
    card = next((s["device"] for s in steps if s["step"].startswith("10_")), steps[0]["device"] if steps else "?")
    dry = any(s["dry_run"] for s in steps)
    (args.out / "gpu_results.json").write_text(json.dumps({"device": card, "dry_run": dry, "steps": steps}, indent=1))
    lines = [f"# bench/gpu.sh on {card}" + (" (DRY RUN: numbers meaningless)" if dry else ""), ""]
    for step in steps:
        status = "FAILED: " + "; ".join(step["failures"]) if step.get("failures") else "ok"
        lines += [f"## {step['step']} ({step['seconds']:.0f} s, {status})", ""]
        lines += [f"- {note}" for note in step["notes"]] + ([""] if step["notes"] else [])
        for title, rows in step["tables"].items():
            lines += [f"### {title}", "", *markdown_table(rows), ""]
    (args.out / "gpu_results.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
