"""The built wheel works on its own: installed into a fresh virtual environment (no checkout on sys.path), it
ships the configs, imports its kernels as `fastforget_kernels` (and not as a top-level `kernels`), and trains,
unlearns and evaluates with `--config digits`.

The fresh venv borrows the running interpreter's site-packages for torch and the other dependencies (a `.pth`
after its own site-packages, so the installed fastforget comes first) instead of downloading them again.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], *, cwd: Path, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the sources (setuptools writes build/ next to them), symlinks kept."""
    pytest.importorskip("setuptools")
    out = tmp_path_factory.mktemp("wheel")
    source = out / "src"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".cache", "runs", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".benchmarks"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
          str(source)], cwd=out, env={**os.environ, "PIP_NO_INDEX": "1"})
    return next(out.glob("fastforget-*.whl"))


def test_wheel_ships_configs_and_every_module(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.name for p in (ROOT / "configs").glob("*.toml")}
    assert shipped and {f"fastforget/configs/{name}" for name in shipped} <= names
    for package, folder in (("fastforget", ROOT / "fastforget"), ("fastforget_kernels", ROOT / "kernels")):
        sources = {f"{package}/{p.relative_to(folder).as_posix()}" for p in folder.rglob("*.py")
                   if "configs" not in p.parts}
        assert sources <= names, f"missing from the wheel: {sorted(sources - names)}"
    assert not any(name.startswith("kernels/") for name in names), "a top-level `kernels` would shadow PyPI's"


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_runs_digits(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path, env=dict(os.environ))
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
         cwd=tmp_path, env=dict(os.environ))
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=tmp_path, env={}).stdout.strip())
    borrowed = [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
    (purelib / "zz_borrowed_dependencies.pth").write_text("\n".join(dict.fromkeys(borrowed)) + "\n")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FASTFORGET_CACHE")}
    env["FASTFORGET_CACHE"] = str(tmp_path / "cache")
    check = ("import fastforget, fastforget_kernels, fastforget.kernels as k, importlib.util\n"
             "from fastforget.config import find_config\n"
             f"assert fastforget.__file__.startswith({str(purelib)!r}), fastforget.__file__\n"
             "assert k is fastforget_kernels and find_config('digits').is_file()\n"
             "assert importlib.util.find_spec('kernels') is None\n")
    _run([str(python), "-c", check], cwd=tmp_path, env=env)
    cli = str(venv / "bin" / "fastforget")
    assert _run([cli, "--version"], cwd=tmp_path, env=env).stdout.strip().endswith("0.1.0")
    _run([cli, "train", "--config", "digits", "--epochs", "2", "--out", "runs/original"], cwd=tmp_path, env=env)
    _run([cli, "unlearn", "--config", "digits", "--method", "rwft-o", "--checkpoint", "runs/original", "--forget",
          "3", "--hp", "epochs=1", "--out", "runs/rwft-o"], cwd=tmp_path, env=env)
    report = _run([cli, "eval", "--checkpoint", "runs/rwft-o", "--metrics", "accuracy"], cwd=tmp_path, env=env)
    assert "ACC_f" in report.stdout
