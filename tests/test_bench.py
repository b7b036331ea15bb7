"""The benchmark grid: end to end on digits, every table, resumable after a kill, tables from the JSON lines."""

import csv
import json

import numpy as np
import pytest

import fastforget.bench as bench_module
from fastforget import api
from fastforget.bench import TABLES, read_results, write_report

QUICK = ["train.epochs=4", "model.width=8", "unlearn.ft.epochs=2", "bench.retrained_seeds=2"]
PNG = b"\x89PNG\r\n\x1a\n"


def test_digits_grid_end_to_end_writes_every_table(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTFORGET_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "grid"
    methods = ["original", "retrain", "rwft-2-o", "rwft-2-o+mix", "rw-mask", "ft"]
    report = api.bench("digits", out=out, methods=methods, forget=["3"],
                       overrides=[*QUICK, "bench.shadows=2", "bench.reference_models=2"])
    records = read_results(out / "results.jsonl")
    assert [r["method"] for r in records] == methods
    for name in TABLES:
        assert (out / f"{name}.md").is_file() and (out / f"{name}.csv").is_file(), name
    text = report.read_text()
    for figure in ("runtime.png", "reassignment_confusion.png", "reassignment_where.png", "accuracy_drop.png"):
        assert f"({figure})" in text and (out / figure).read_bytes().startswith(PNG)
    samples = sorted((out / "samples").glob("*.npz"))  # per-sample outputs, one file per cell
    assert len(samples) == len(records) and "original_test_logits" in np.load(samples[0])
    unlearned = [r for r in records if r["method"] not in ("original", "retrain")]
    for r in unlearned:
        assert 0 <= r["ulira"] <= 100 and 0 <= r["rmia_auc_f"] <= 1 and 0 <= r["rmia_auc_r"] <= 1
        assert r["utv_test"] >= 0 and {"seed", "versions", "hyperparameters", "wall_seconds"} <= set(r)
        if r["method"].startswith("rw"):
            assert r["acc_f_test"] == 0.0
    retrain = next(r for r in records if r["method"] == "retrain")
    assert "utv_test" in retrain  # against the second retrained seed, not itself
    assert json.loads((out / "config.json").read_text())["bench"]["shadows"] == 2


def test_killed_run_resumes_without_redoing_cells(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTFORGET_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "grid"
    methods = ["original", "rwft-2-o", "ft", "rw-mask"]
    calls: list[str] = []
    real_run_method = bench_module.run_method

    def dies_at_ft(name, ctx, overrides=None):
        calls.append(name)
        if name == "ft":
            raise KeyboardInterrupt  # the user pressed Ctrl-C in the middle of the grid
        return real_run_method(name, ctx, overrides)

    monkeypatch.setattr(bench_module, "run_method", dies_at_ft)
    with pytest.raises(KeyboardInterrupt):
        api.bench("digits", out=out, methods=methods, forget=["3"], overrides=QUICK)
    assert [r["method"] for r in read_results(out / "results.jsonl")] == ["original", "rwft-2-o"]
    with open(out / "results.jsonl", "a") as f:
        f.write('{"cell": "rw-mask|3|s0", "meth')  # a line cut off by a kill during the write

    def no_training(*args, **kwargs):
        raise AssertionError("a finished model was trained again instead of reused")

    monkeypatch.setattr(bench_module, "train_model", no_training)
    calls.clear()
    monkeypatch.setattr(bench_module, "run_method", lambda name, ctx, overrides=None: (
        calls.append(name), real_run_method(name, ctx, overrides))[1])
    api.bench("digits", out=out, methods=methods, forget=["3"], overrides=QUICK)
    assert calls == ["ft", "rw-mask"]
    assert [r["method"] for r in read_results(out / "results.jsonl")] == methods


def test_reused_models_are_checked_against_the_config(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTFORGET_CACHE", str(tmp_path / "cache"))
    api.bench("digits", out=tmp_path, methods=["original"], forget=["3"], overrides=QUICK)
    with pytest.raises(Exception, match="belongs to another config"):
        api.bench("digits", out=tmp_path, methods=["rw-mask"], forget=["3"], overrides=[*QUICK, "train.lr=0.01"])


def test_tables_are_computed_from_the_json_lines(tmp_path):
    rng = np.random.default_rng()
    records = []
    for method in ("retrain", "rwft-2-o"):
        for forget in range(3):
            records.append({"cell": f"{method}|{forget}|s0", "method": method, "forget": [forget],
                            "forget_names": [str(forget)], "seed": 0, "acc_r_test": float(rng.uniform(80, 99)),
                            "acc_f_test": 0.0, "mia": float(rng.uniform(90, 100)),
                            "wall_seconds": float(rng.uniform(1, 10)), "peak_memory_bytes": 2**20})
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    write_report(tmp_path, [str(i) for i in range(10)], {})
    with open(tmp_path / "table2_accuracy_mia.csv") as f:
        rows = {row["method"]: row for row in csv.DictReader(f)}
    values = [r["acc_r_test"] for r in records if r["method"] == "rwft-2-o"]
    assert float(rows["rwft-2-o"]["acc_r_test_mean"]) == pytest.approx(sum(values) / 3)
    assert float(rows["rwft-2-o"]["acc_r_test_std"]) == pytest.approx(np.std(values, ddof=1))
    runtime = (tmp_path / "runtime.md").read_text()
    retrain_t = np.mean([r["wall_seconds"] for r in records if r["method"] == "retrain"])
    rwft_t = np.mean([r["wall_seconds"] for r in records if r["method"] == "rwft-2-o"])
    assert f"{retrain_t / rwft_t:.1f}x" in runtime
    assert "Table 2 form" in (tmp_path / "report.md").read_text()
