"""The benchmark grid on a real local Ray cluster (CPU, two worker slots), started once for this module.

Ray 2.60 has no local mode: `ray.init(num_cpus=2)` starts the GCS, a raylet and workers as processes of this
test, on 127.0.0.1 only (checked with `ss -ltnp`), with its session folders and auth token in a temporary folder.
The models are trained once (local engine) and shared by every run, so that engines are compared on the same
saved models.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")  # read when ray is imported
ray = pytest.importorskip("ray", reason="the ray extra is not installed (scripts/setup.sh installs it)")
psutil = pytest.importorskip("psutil")

import torch  # noqa: E402

from fastforget import api  # noqa: E402
from fastforget.bench import read_results  # noqa: E402
from fastforget.errors import GridIncompleteError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["train.epochs=3", "model.width=8", "unlearn.ft.epochs=1", "unlearn.rwft-2-o.epochs=2",
         "bench.retrained_seeds=2", "bench.reference_models=2",
         'bench.metrics=["accuracy", "mia", "mia_nn", "utv", "reassignment", "rmia"]']
DIVERGES = ["bench.variants.ft-diverges.method=ft", "bench.variants.ft-diverges.lr=1e30"]
METHODS = ["original", "retrain", "rwft-2-o", "ft", "rw-mask"]
MORE = [*METHODS, "ga", "l1", "rl", "rwft-o", "salun"]
ENGINE_FIELDS = ("wall_seconds", "versions", "execution", "peak_memory_bytes", "peak_memory_kind")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local cluster on the loopback; HOME points at a temporary folder for ~/.ray/auth_token."""
    home = tmp_path_factory.mktemp("home")
    sessions = tempfile.mkdtemp(prefix="ffray", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    patch = pytest.MonkeyPatch()
    for key, value in {"HOME": str(home), "FASTFORGET_CACHE": str(tmp_path_factory.mktemp("cache")),
                       "FASTFORGET_PROGRESS": "0"}.items():
        patch.setenv(key, value)
    ray.init(num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False, _temp_dir=sessions,
             configure_logging=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        patch.undo()
        shutil.rmtree(sessions, ignore_errors=True)


@pytest.fixture(scope="module")
def models(cluster, tmp_path_factory):
    """The grid's trained models (original, two retrained seeds, two RMIA references), trained once."""
    out = tmp_path_factory.mktemp("trained")
    api.bench("digits", out=out, methods=["original"], forget=["3"], overrides=QUICK)
    return out / "models"


def _with_models(models: Path, out: Path) -> Path:
    shutil.copytree(models, out / "models")
    return out


def _compared(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ENGINE_FIELDS}


def _listening_elsewhere() -> list[str]:
    """Listening sockets of this process and its descendants (the Ray cluster) not bound to 127.0.0.1."""
    ours = {os.getpid(), *(p.pid for p in psutil.Process().children(recursive=True))}
    lines = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines()
    return [line for line in lines if any(f"pid={pid}," in line for pid in ours)
            and line.split()[3].rsplit(":", 1)[0] not in ("127.0.0.1", "[::ffff:127.0.0.1]")]


def test_ray_grid_equals_local_bit_for_bit_and_lists_failures(cluster, models, tmp_path):
    local, on_ray = _with_models(models, tmp_path / "local"), _with_models(models, tmp_path / "ray")
    grid = dict(methods=[*METHODS, "ft-diverges"], forget=["3"], overrides=[*QUICK, *DIVERGES])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a Ray worker of one CPU (OMP_NUM_THREADS=1)
    try:
        with pytest.raises(GridIncompleteError, match="ft-diverges"):
            api.bench("digits", out=local, **grid)
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(GridIncompleteError, match="1 task"):
        api.bench("digits", out=on_ray, engine="ray", **grid)
    assert _listening_elsewhere() == []

    expected = {r["cell"]: r for r in read_results(local / "results.jsonl")}
    found = {r["cell"]: r for r in read_results(on_ray / "results.jsonl")}
    assert sorted(found) == sorted(expected) == sorted(f"{m}|3|s0" for m in METHODS)
    for cell, record in found.items():
        assert _compared(record) == _compared(expected[cell]), cell
        assert record["execution"]["engine"] == "ray" and expected[cell]["execution"]["engine"] == "local"
        assert record["execution"]["node_ip"] == "127.0.0.1"
    compared = sorted(p.name for p in local.glob("*.md") if p.name not in ("runtime.md", "report.md"))
    assert "rmia.md" in compared and len(compared) >= 4
    for table in compared:
        assert (on_ray / table).read_text() == (local / table).read_text(), table
    for out in (local, on_ray):
        failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
        assert [(f["task"], f["kind"], f["error"]) for f in failures] == [
            ("cell:ft-diverges|3|s0", "error", "TrainingDivergedError")]


def _driver(out: Path, address: str, methods: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "fastforget", "bench", "--config", "digits", "--out", str(out), "--forget", "3",
               "--methods", ",".join(methods), "--engine", "ray", "--address", address,
               *(arg for setting in QUICK for arg in ("--set", setting))]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.is_file() else []


def _wait(predicate, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            raise AssertionError(f"the driver exited ({process.returncode}) early: {process.stdout.read()[-3000:]}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_driver_killed_mid_grid_resumes_without_redoing_cells(cluster, models, tmp_path):
    out = _with_models(models, tmp_path / "grid")
    results = out / "results.jsonl"
    driver = _driver(out, cluster, MORE)
    _wait(lambda: len(_lines(results)) >= 2, driver)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    before = _lines(results)
    assert 2 <= len(before) < len(MORE), "the driver was not killed mid-grid"

    api.bench("digits", out=out, methods=MORE, forget=["3"], overrides=QUICK, engine="ray")
    after = _lines(results)
    cells = [json.loads(line)["cell"] for line in after if line.strip()]
    assert len(cells) == len(set(cells)), "a cell was written twice"
    assert sorted(cells) == sorted(f"{m}|3|s0" for m in MORE)
    assert after[: len(before)] == before or after[: len(before) - 1] == before[:-1]  # a cut last line is redone
    assert {r["execution"]["engine"] for r in read_results(results)} == {"ray"}


def test_a_killed_worker_is_retried(cluster, models, tmp_path):
    out = _with_models(models, tmp_path / "grid")
    driver = _driver(out, cluster, METHODS)
    victim: list[int] = []

    def a_cell_is_running() -> bool:
        for process in psutil.process_iter(["cmdline"]):
            title = (process.info["cmdline"] or [""])[0]
            if title.startswith("ray::cell:") and "original" not in title:
                victim.append(process.pid)
                process.send_signal(signal.SIGKILL)
                return True
        return False

    _wait(a_cell_is_running, driver)
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 0, output[-3000:]
    records = read_results(out / "results.jsonl")
    assert sorted(r["cell"] for r in records) == sorted(f"{m}|3|s0" for m in METHODS)
    assert victim[0] not in {r["execution"]["pid"] for r in records}
    assert not (out / "failures.jsonl").exists()
