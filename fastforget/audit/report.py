"""The audit's three files, all from the report dict alone: audit.json (every number, verdicts, thresholds,
provenance), audit.md (for a pull request or a ticket) and audit.html (one self-contained page: inline style,
figures embedded as data URIs, readable offline without the tool)."""

from __future__ import annotations

import base64
import html
import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fastforget.audit.verdicts import INDISTINGUISHABLE, LEAKS, NOT_INFORMATIVE, SHORTFALL
from fastforget.io import atomic_write, write_json

FILES = ("audit.json", "audit.md", "audit.html")
CSS_CLASS = {INDISTINGUISHABLE: "pass", LEAKS: "leak", SHORTFALL: "short", NOT_INFORMATIVE: "uninformative"}


def _number(value: float | None) -> str:
    """Two decimals for percentages and the like, four for fractions."""
    if value is None:
        return "-"
    return f"{value:.2f}" if abs(value) >= 10 else f"{value:.4f}" if abs(value) >= 1e-3 or not value else f"{value:.2g}"


def _shown(test: Mapping[str, Any]) -> str:
    text = _number(test["value"])
    if test.get("interval"):
        low, high = test["interval"]
        text += f" [{_number(low)}, {_number(high)}]"
    return text


def _outcome(test: Mapping[str, Any]) -> str:
    verdict = test["verdict"]
    if verdict == LEAKS and test.get("excess") is not None:
        widths = test.get("excess_widths")
        size = f"by {_number(test['excess'])}" + (f", {widths:.1f} floor-widths" if widths is not None else "")
        return f"{verdict} ({size})" if test["excess"] else verdict
    if verdict == SHORTFALL and test.get("excess") is not None:
        return f"{verdict} (by {_number(test['excess'])})"
    if verdict == NOT_INFORMATIVE:
        evidence = test.get("evidence") or {}
        if evidence.get("original_passes"):
            return f"{verdict} (the original passes it too, at {_number(evidence['original_value'])})"
        shown = ", ".join(f"{k} {_number(v)}" for k, v in evidence.items() if isinstance(v, float))
        return f"{verdict} (the attack cannot tell its own members apart{': ' + shown if shown else ''})"
    return verdict


def _rows(report: Mapping[str, Any]) -> list[tuple[Mapping[str, Any], list[str]]]:
    return [(t, [t["label"], t["kind"], t["concern"], _shown(t), t["test"], _outcome(t)]) for t in report["tests"]]


HEADERS = ["test", "kind", "concern", "value [95% interval]", "passes when (interval against yardstick)", "verdict"]


def _summary(report: Mapping[str, Any]) -> str:
    tests = report["tests"]
    counts = {v: sum(t["verdict"] == v for t in tests) for v in (INDISTINGUISHABLE, LEAKS, SHORTFALL, NOT_INFORMATIVE)}
    return (f"{counts[INDISTINGUISHABLE]} of {len(tests)} tests indistinguishable from retraining, "
            f"{counts[LEAKS]} leak, {counts[SHORTFALL]} below retraining on the retained classes, "
            f"{counts[NOT_INFORMATIVE]} not informative")


def _models_lines(report: Mapping[str, Any]) -> list[str]:
    return [f"{m['role']}: {m['path'] or '-'} (seed {m['seed']}, weights SHA-256 {m['weights_sha256']})"
            for m in report["provenance"]["models"]]


def _not_run(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [*report["skipped"].items(), *report["untested"].items()]


def write_markdown(path: str | Path, report: Mapping[str, Any]) -> Path:
    lines = [f"# Audit: {report['question']}", "",
             f"**Answer: {report['answer']}** (exit code {report['exit_code']}). {_summary(report)}.", "",
             f"Model: `{report['provenance']['models'][0]['path']}` ({report['method']}) on {report['dataset']}, "
             f"forgetting {', '.join(report['forget_names'])}.", "",
             "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |" for _, cells in _rows(report)]
    lines += ["", "Output tests compare the model's outputs with retrained models evaluated the same way; white-box "
              "tests look at its weights and at a linear probe on its penultimate features.", ""]
    if report["skipped"] or report["untested"]:
        lines += ["Not run or not tested:", ""] + [f"- {name}: {why}" for name, why in _not_run(report)] + [""]
    lines += ["## Provenance", ""] + [f"- {line}" for line in _models_lines(report)]
    provenance = report["provenance"]
    lines += [f"- data fingerprint: `{json.dumps(provenance['data_fingerprint'], sort_keys=True)}`",
              f"- device: {provenance['device']}; versions: {json.dumps(provenance['versions'], sort_keys=True)}",
              f"- audit took {provenance['wall_seconds']:.1f} s; every number is in audit.json", ""]
    return atomic_write(path, lambda tmp: tmp.write_text("\n".join(lines)))


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def verdict_figure(tests: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Each test's value and interval against its threshold, one small panel per test, coloured by verdict."""
    from matplotlib.figure import Figure

    from fastforget.metrics.plots import save_png

    colours = {INDISTINGUISHABLE: "tab:green", LEAKS: "tab:red", SHORTFALL: "tab:orange",
               NOT_INFORMATIVE: "tab:gray"}
    columns = 4
    rows = max(1, -(-len(tests) // columns))
    figure = Figure(figsize=(3.2 * columns, 1.3 * rows + 0.4), layout="constrained")
    axes_grid = figure.subplots(rows, columns, squeeze=False)
    for index, axes in enumerate(axes_grid.flat):
        if index >= len(tests):
            axes.set_axis_off()
            continue
        test = tests[index]
        low, high = test["interval"] or (test["value"], test["value"])
        colour = colours[test["verdict"]]
        axes.errorbar([test["value"]], [0], xerr=[[test["value"] - low], [high - test["value"]]], fmt="o",
                      color=colour, capsize=3)
        if test["threshold"] is not None:
            axes.axvline(test["threshold"], color="black", linestyle="--", linewidth=1)
        axes.set_yticks([])
        axes.set_title(test["label"], fontsize=8, color=colour)
        axes.tick_params(labelsize=7)
    figure.suptitle("value and 95% interval (dot) against the threshold (dashed)", fontsize=9)
    return save_png(figure, path)


def _figures(report: Mapping[str, Any], folder: Path) -> list[tuple[str, str]]:
    """(caption, data URI) of each figure."""
    from fastforget.metrics.plots import plot_confusion_matrices

    figures = [("Every test: the audited model's value against its threshold.",
                _data_uri(verdict_figure(report["tests"], folder / "verdicts.png")))]
    confusion = report["results"].get("confusion_test")
    if confusion:
        png = plot_confusion_matrices({"audited model (test split)": confusion}, folder / "confusion.png",
                                      class_names=report["classes"])
        figures.append(("Where the audited model sends each class of the test split.", _data_uri(png)))
    return figures


STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 72em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #bbb; padding: 0.3em 0.6em; text-align: left; font-size: 0.9em; }
th { background: #eee; }
tr.pass td:last-child { background: #d9f2d9; }
tr.leak td:last-child { background: #f7c9c9; font-weight: bold; }
tr.short td:last-child { background: #fbe3c0; }
tr.uninformative td:last-child { background: #e4e4e4; }
.answer { font-size: 1.3em; padding: 0.5em; border: 2px solid #444; display: inline-block; }
img { max-width: 100%; }
code { font-size: 0.85em; }
"""

# Counts the embedded figures that decoded, so that a headless browser's dumped DOM shows it.
CHECK_IMAGES = """
window.addEventListener('load', function () {
  var images = document.images, decoded = 0;
  for (var i = 0; i < images.length; i++) { if (images[i].complete && images[i].naturalWidth > 0) decoded++; }
  document.body.setAttribute('data-images-decoded', decoded + '/' + images.length);
});
"""


def write_html(path: str | Path, report: Mapping[str, Any]) -> Path:
    e = html.escape
    with tempfile.TemporaryDirectory(prefix="fastforget-audit-") as folder:
        figures = _figures(report, Path(folder))
    body = [f"<h1>Audit: {e(report['question'])}</h1>",
            f"<p class='answer' id='answer' data-answer='{e(report['answer'])}'>Answer: <b>{e(report['answer'])}"
            f"</b> (exit code {report['exit_code']})</p>",
            f"<p>{e(_summary(report))}.</p>",
            f"<p>Model <code>{e(str(report['provenance']['models'][0]['path']))}</code> ({e(report['method'])}) on "
            f"{e(report['dataset'])}, forgetting {e(', '.join(report['forget_names']))}.</p>",
            "<table id='verdicts'><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in HEADERS) + "</tr></thead><tbody>"]
    for test, cells in _rows(report):
        body.append(f"<tr class='verdict {CSS_CLASS[test['verdict']]}' data-key='{e(test['key'])}'>"
                    + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
    body.append("</tbody></table>")
    if report["skipped"] or report["untested"]:
        body.append("<p>Not run or not tested:</p><ul>" + "".join(f"<li>{e(k)}: {e(v)}</li>"
                                                                  for k, v in _not_run(report)) + "</ul>")
    for caption, uri in figures:
        body.append(f"<figure><img alt='{e(caption)}' src='{uri}'><figcaption>{e(caption)}</figcaption></figure>")
    provenance = report["provenance"]
    body.append("<h2>Provenance</h2><ul>" + "".join(f"<li>{e(line)}</li>" for line in _models_lines(report))
                + f"<li>data fingerprint: <code>{e(json.dumps(provenance['data_fingerprint'], sort_keys=True))}"
                  f"</code></li><li>device: {e(provenance['device'])}</li><li>versions: <code>"
                  f"{e(json.dumps(provenance['versions'], sort_keys=True))}</code></li></ul>"
                + "<p>Every number, threshold and setting is in audit.json beside this page.</p>")
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(report['question'])}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}<script>{CHECK_IMAGES}</script></body></html>")
    return atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))


def write_reports(out: str | Path, report: Mapping[str, Any]) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return [write_json(out / "audit.json", report), write_markdown(out / "audit.md", report),
            write_html(out / "audit.html", report)]
