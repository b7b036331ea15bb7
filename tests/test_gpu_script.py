"""bench/gpu.sh, the one script a lent GPU runs, kept working without a GPU: its dry run walks every step on the
CPU (tiny shapes, Triton interpreted, synthetic CIFAR-shaped data) and must leave one JSON and one Markdown
table. A mock of the GPU in the sense that the numbers mean nothing; the code paths are the real ones."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_script_dry_run_on_cpu(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable, FASTFORGET_PROGRESS="0")
    env.pop("TRITON_INTERPRET", None)  # the script sets it itself for a dry run
    result = subprocess.run(["bash", "bench/gpu.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_results.json").read_text())
    assert report["dry_run"] is True
    steps = {step["step"]: step for step in report["steps"]}
    expected = sorted(path.stem for path in (ROOT / "bench" / "gpu").glob("[0-9][0-9]_*.py"))
    assert sorted(steps) == expected
    assert all(not step["failures"] for step in steps.values())
    assert steps["30_kernel_timings"]["tables"]["Reweighted cross-entropy, forward + backward"]
    assert any("ABSENT" in note or "imported" in note for note in steps["40_liger"]["notes"])
    unlearning = steps["50_unlearning"]["tables"]
    assert [row["run"].split(",")[0] for row in next(iter(unlearning.values()))] == ["train", "RWFT-2-O"]
    loop = steps["60_loop"]["tables"]
    syncs = next(rows for title, rows in loop.items() if title.startswith("Host syncs"))
    assert [row["loop"] for row in syncs] == ["fit (fast recipe step)", "RWFT-2-O"]
    assert all(row["host syncs / step"] == 0 for row in syncs)
    assert next(rows for title, rows in loop.items() if title.startswith("RWFT-2-O"))[0]["steps"] >= 1
    assert next(rows for title, rows in loop.items() if title.startswith("Training"))[0]["images/s"] > 0
    assert next(rows for title, rows in loop.items() if title.startswith("Fast recipe"))[0]["epochs"] == 1
    assert any(title.startswith("RWFT teacher's q*") for title in loop)  # within 1e-3, else the step failed
    markdown = (tmp_path / "gpu_results.md").read_text()
    assert "DRY RUN" in markdown and "| impl |" in markdown
