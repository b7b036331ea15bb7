"""bench/gpu_loop.py, the GPU measurements of the training loop, walked end to end on the CPU (--dry-run), so that
the script a lent GPU runs is known to work before the GPU time is spent."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_loop_dry_run_writes_every_section(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_loop.py"), "--dry-run", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_loop.json").read_text())
    assert report["dry_run"] and "CPU" in report["device"]
    assert set(report["syncs"]) == {"fit", "rwft-2-o"}
    assert report["rwft_2_o"]["eager"]["steps"] >= 1 and report["train"]["eager"]["images_per_s"] > 0
    assert report["fast_recipe"]["epochs"] == 1 and report["q_star"]["within_1e-3"]
    assert "DRY RUN" in (tmp_path / "gpu_loop.md").read_text()
