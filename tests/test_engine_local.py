"""The benchmark plan as a graph on the local engine: cells load models and never train them, failures are listed
and the rest finishes, and `--print-commands` gives one resumable command per task (the Slurm path)."""

import io
import json
import shlex
import sys
from contextlib import redirect_stderr, redirect_stdout

import pytest

import fastforget.bench as bench_module
from fastforget import api, cli
from fastforget.bench import read_results
from fastforget.data import data_fingerprint
from fastforget.errors import CheckpointError, ConfigError, GridIncompleteError

QUICK = ["train.epochs=3", "model.width=8", "bench.retrained_seeds=1", "bench.shadows=0", "bench.reference_models=0"]
ATTACKS = ["bench.retrained_seeds=2", "bench.shadows=2", "bench.reference_models=2",
           'bench.metrics=["accuracy", "utv", "ulira", "rmia"]']
METHODS = ["original", "retrain", "rw-mask"]


def _cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.argv", ["fastforget", *args])
        try:
            cli.main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code or 0
    return code, out.getvalue(), err.getvalue()


def test_the_graph_trains_each_model_once_and_cells_only_load(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTFORGET_CACHE", str(tmp_path / "cache"))
    bench = bench_module.plan("digits", methods=["original", "rw-mask", "ft"], forget=["3", "5"],
                              overrides=[*QUICK, *ATTACKS])
    ctx = bench_module.GridContext(cfg=bench.cfg, settings=bench.settings, out=tmp_path,
                                   fingerprint=data_fingerprint(bench.dataset), cache_dir=tmp_path / "cache")
    tasks = bench_module.build_graph(bench, ctx, bench_module._all_cells(bench))
    keys = [t.key for t in tasks]
    assert len(keys) == len(set(keys))
    trainings = [t for t in tasks if not t.cell]
    # 1 original, 2 retrained per forget set, 2 U-LIRA shadow originals (shared), 2 shadow retrained per forget
    # set, 2 RMIA references
    assert len(trainings) == 1 + 2 * 2 + 2 + 2 * 2 + 2
    cells = {t.key: t for t in tasks if t.cell}
    assert set(cells) == {f"cell:{m}|{f}|s0" for m in ["original", "rw-mask", "ft"] for f in "35"}
    assert all(set(t.needs) <= {x.key for x in trainings} for t in cells.values())
    assert "train:shadow-original-s10000" in cells["cell:original|3|s0"].needs  # U-LIRA's ends too
    assert "train:shadow-retrained-5-s10001" in cells["cell:ft|5|s0"].needs
    assert "train:shadow-retrained-5-s10001" not in cells["cell:ft|3|s0"].needs
    with pytest.raises(CheckpointError, match="training task"):  # a cell never trains a missing model
        cells["cell:rw-mask|3|s0"].fn(*cells["cell:rw-mask|3|s0"].args,
                                      *(t.product for t in trainings if t.key in cells["cell:rw-mask|3|s0"].needs))


def test_a_failing_cell_is_listed_and_the_rest_finishes(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTFORGET_CACHE", str(tmp_path / "cache"))
    overrides = [*QUICK, "bench.variants.boom.method=ft", "bench.variants.boom.lr=1e30"]
    with pytest.raises(GridIncompleteError, match="boom.*failures.jsonl"):
        api.bench("digits", out=tmp_path / "grid", methods=["original", "boom", "rw-mask"], forget=["3"],
                  overrides=overrides)
    assert [r["method"] for r in read_results(tmp_path / "grid" / "results.jsonl")] == ["original", "rw-mask"]
    failure, = [json.loads(line) for line in (tmp_path / "grid" / "failures.jsonl").read_text().splitlines()]
    assert (failure["task"], failure["kind"], failure["error"]) == ("cell:boom|3|s0", "error",
                                                                    "TrainingDivergedError")
    assert (tmp_path / "grid" / "report.md").is_file()  # the finished cells are reported
    code, _, err = _cli("bench", "--config", "digits", "--out", str(tmp_path / "grid"), "--methods",
                        "original,boom,rw-mask", "--forget", "3", *(a for o in overrides for a in ("--set", o)))
    assert code == 2 and "1 task(s) failed" in err and "rerun" in err  # retried, fails again, exits non-zero


def test_print_commands_run_one_by_one_give_the_whole_grid(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTFORGET_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "grid"
    args = ["bench", "--config", "digits", "--out", str(out), "--methods", ",".join(METHODS), "--forget", "3",
            *(a for o in QUICK for a in ("--set", o))]
    code, printed, _ = _cli(*args, "--print-commands")
    assert code == 0
    commands = [line for line in printed.splitlines() if line and not line.startswith("#")]
    only = [shlex.split(c) for c in commands if "--only" in c]
    assert [c[-1] for c in only][-len(METHODS):] == [f"cell:{m}|3|s0" for m in METHODS]
    assert not out.exists()  # printing runs nothing
    with pytest.raises(CheckpointError, match="--only train:original-s0"):
        api.bench("digits", out=out, methods=METHODS, forget=["3"], overrides=QUICK, only="cell:rw-mask|3|s0")
    for command in only:  # as a scheduler would run them: models first, then cells, each a fresh command
        code, _, err = _cli(*command[1:])
        assert code == 0, err
    assert _cli(*only[-1][1:])[0] == 0  # a cell run twice is not written twice
    lines = (out / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["cell"] for line in lines) == sorted(f"{m}|3|s0" for m in METHODS)
    code, shown, _ = _cli(*shlex.split(commands[-1])[1:])  # the plain command: nothing to do but the report
    assert code == 0 and "table2_accuracy_mia" in shown
    with pytest.raises(ConfigError, match="not a task"):
        api.bench("digits", out=out, methods=METHODS, forget=["3"], overrides=QUICK, only="cell:nope")


def test_cells_that_shared_a_device_are_counted():
    def cell(node, gpus, start, end):
        return {"execution": {"node": node, "cuda_visible_devices": gpus, "started": start, "finished": end}}

    records = [cell("a", "0", 0, 10), cell("a", "0", 5, 15), cell("a", "1", 0, 10),  # GPU 1: alone
               cell("b", None, 0, 10), cell("b", None, 10, 20), {"cell": "from before execution was recorded"}]
    assert bench_module.cells_sharing_a_device(records) == 2
    assert bench_module.cells_sharing_a_device(records[2:]) == 0


@pytest.mark.parametrize("options, message", [
    ({"name": "dask"}, "--engine must be one of local, ray"),
    ({"name": "ray", "gpus_per_cell": 1.5}, "--gpus-per-cell must be a fraction"),
    ({"name": "ray", "gpus_per_cell": 0}, "--gpus-per-cell must be a fraction"),
    ({"name": "ray", "max_retries": -1}, "--max-retries must be >= 0"),
    ({"name": "local", "address": "auto"}, "--address is for --engine ray"),
])
def test_engine_options_are_checked(options, message):
    from fastforget.engines import make_engine

    with pytest.raises(ConfigError, match=message):
        make_engine(**options)


def test_ray_engine_without_ray_names_the_extra(monkeypatch):
    from fastforget.engines import make_engine

    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    with pytest.raises(ConfigError, match=r"pip install 'fastforget\[ray\]'"):
        make_engine("ray")
