"""The GPU path checked without a GPU: every Triton specialization the library can launch compiles for sm_80 and
sm_90 (`python -m fastforget_kernels.aot`), without spills, with 16-byte loads where the tiling promises them.

Runs in a subprocess with TRITON_INTERPRET removed: tests/conftest.py sets it for this process, and the
interpreter never compiles. About a minute on two idle cores (the compiles run in parallel).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def nvidia_backend_available() -> bool:
    try:
        from triton.backends.nvidia.compiler import get_ptxas  # noqa: F401
    except ImportError:
        return False
    return True


def run_aot(*args: str, timeout: int) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "fastforget_kernels.aot", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.skipif(not nvidia_backend_available(), reason="Triton's NVIDIA backend (ptxas) is not installed")
def test_every_specialization_compiles_for_sm80_and_sm90():
    result = run_aot("--arch", "sm_80", "--arch", "sm_90", timeout=900)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("sm_")]
    assert len(rows) >= 100, result.stdout[-3000:]
    # Regression: the soft-target mode with rows longer than a block failed in TritonGPUOptimizeThreadLocality
    # (`loopResult.hasOneUse()`) for both archs.
    soft_chunked = [row for row in rows if "MODE=2" in row and "SINGLE=False" in row]
    assert {row.split()[0] for row in soft_chunked} == {"sm_80", "sm_90"}
    assert not any("FAILED" in row for row in rows)


def test_refuses_to_run_interpreted():
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "fastforget_kernels.aot", "--list"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "TRITON_INTERPRET" in result.stderr
