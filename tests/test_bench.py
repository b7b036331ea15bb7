"""The benchmark grid: end to end on digits, every table, resumable after a kill, tables (with intervals and the
uninformative mark) from the JSON lines."""

import csv
import json

import numpy as np
import pytest

import fastforget.bench as bench_module
from fastforget import api
from fastforget.bench import read_results, tables, write_report
from fastforget.metrics.intervals import combine_cells

QUICK = ["train.epochs=4", "model.width=8", "train.amp=false", "unlearn.ft.epochs=2", "bench.retrained_seeds=2"]
ALL_METRICS = 'bench.metrics=["accuracy", "mia", "mia_nn", "utv", "reassignment", "ulira", "rmia"]'
PNG = b"\x89PNG\r\n\x1a\n"


def test_digits_grid_end_to_end_writes_every_table(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTFORGET_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "grid"
    methods = ["original", "retrain", "rwft-2-o", "rwft-2-o+mix", "rw-mask", "ft"]
    report = api.bench("digits", out=out, methods=methods, forget=["3"],
                       overrides=[*QUICK, ALL_METRICS, "bench.shadows=2", "bench.reference_models=2"])
    records = read_results(out / "results.jsonl")
    assert [r["method"] for r in records] == methods
    for name in tables():
        assert (out / f"{name}.md").is_file() and (out / f"{name}.csv").is_file(), name
    text = report.read_text()
    for figure in ("runtime.png", "reassignment_confusion.png", "reassignment_where.png", "accuracy_drop.png"):
        assert f"({figure})" in text and (out / figure).read_bytes().startswith(PNG)
    samples = sorted((out / "samples").glob("*.npz"))  # per-sample outputs, one file per cell
    assert len(samples) == len(records) and "original_test_logits" in np.load(samples[0])
    for r in records:  # the original and retrain rows too: U-LIRA's two ends (nothing unlearned, retrained)
        assert 0 <= r["ulira"] <= 100 and 0 <= r["rmia_auc_f"] <= 1 and 0 <= r["rmia_auc_r"] <= 1
        assert r["utv_test"] >= 0 and {"seed", "versions", "hyperparameters", "wall_seconds"} <= set(r)
        assert r["eval_seed"] == 0 and r["train_samples_evaluated"] == r["train_samples_total"]
        if r["method"].startswith("rw"):
            assert r["acc_f_test"] == 0.0
        assert ("utv_target_test" in r) == r["method"].startswith("rwft")  # the methods with a `reassign` rule
    retrain = next(r for r in records if r["method"] == "retrain")
    assert "utv_test" in retrain  # against the second retrained seed, not itself
    table = (out / "table2_accuracy_mia.md").read_text()
    mia_cells = [line.split(" | ")[3] for line in table.splitlines()[2:]]
    assert all("[" in cell and ("uninformative" in cell) == (not r["mia_informative"])
               for cell, r in zip(mia_cells, records, strict=True)), table
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
    for method in ("retrain", "rwft-2-o", "rw-mask"):
        for forget in range(3):
            acc = float(rng.uniform(80, 99))
            records.append({"cell": f"{method}|{forget}|s0", "method": method, "forget": [forget],
                            "forget_names": [str(forget)], "seed": 0, "acc_r_test": acc,
                            "acc_r_test_ci": [acc - 1, acc + 1], "acc_f_test": 0.0,
                            "mia": float(rng.uniform(90, 100)), "mia_informative": forget != 1,
                            "mia_attack_auc": 0.5 if forget == 1 else 0.7, "train_samples_evaluated": 1257,
                            "train_samples_total": 1257,
                            "wall_seconds": float(rng.uniform(1, 10)) if method != "rw-mask" else 0.004,
                            "peak_memory_bytes": 2**20})
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    write_report(tmp_path, [str(i) for i in range(10)], {})
    with open(tmp_path / "table2_accuracy_mia.csv") as f:
        rows = {row["method"]: row for row in csv.DictReader(f)}
    cells = [r for r in records if r["method"] == "rwft-2-o"]
    values = [r["acc_r_test"] for r in cells]
    assert float(rows["rwft-2-o"]["acc_r_test_value"]) == pytest.approx(sum(values) / 3)
    expected = combine_cells(values, [r["acc_r_test_ci"] for r in cells], seed=0)
    assert [float(rows["rwft-2-o"]["acc_r_test_low"]), float(rows["rwft-2-o"]["acc_r_test_high"])] == \
        pytest.approx(expected)
    assert rows["rwft-2-o"]["acc_r_test_n"] == "3" and rows["rwft-2-o"]["mia_uninformative"] == "1"
    table = (tmp_path / "table2_accuracy_mia.md").read_text()
    assert f"| {np.mean(values):.2f} [{expected[0]:.2f}, {expected[1]:.2f}] |" in table
    assert "uninformative in 1/3 cells (attack AUC 0.63" in table  # never a bare MIA score
    runtime = (tmp_path / "runtime.md").read_text()
    retrain_t = np.mean([r["wall_seconds"] for r in records if r["method"] == "retrain"])
    rwft_t = np.mean([r["wall_seconds"] for r in records if r["method"] == "rwft-2-o"])
    assert f"{retrain_t / rwft_t:.1f}x" in runtime
    rw_mask = next(line for line in runtime.splitlines() if line.startswith("| rw-mask |"))
    assert rw_mask.endswith("| instant |")  # not a ratio of timer noise like "1250.0x"
    report = (tmp_path / "report.md").read_text()
    assert "Table 2 form" in report and "the whole training split (1,257 samples)" in report
