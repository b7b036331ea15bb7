"""`fastforget audit`: verdict rules, white-box checks, the digits audits end to end, the reports, the HTML in a
headless browser.

The end-to-end part trains its own small digits models (5 epochs, width 8): the audit trains two retrained
references, U-LIRA's shadow pairs and RMIA's references with the recipe of the audited model, and the shared
15-epoch fixtures would make those several times slower. Everything the audits train is cached in one folder
that the three audits share, as a user's reruns would.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
import torch

from fastforget import api
from fastforget.audit import (
    INDISTINGUISHABLE,
    LEAKS,
    NOT_INFORMATIVE,
    RULES,
    SHORTFALL,
    classifier_layer,
    judge,
    penultimate_features,
    plan_references,
    weight_change,
)
from fastforget.audit.verdicts import apply_control, output_verdicts, overall
from fastforget.data import load_dataset
from fastforget.metrics.registry import Better, Column, register, unregister
from fastforget.models import IdentityAdapters, LogitMask, build_model

TINY = ["train.epochs=5", "model.width=8"]
SETTINGS = {"shadows": 2, "reference_models": 2}
PASSING = {INDISTINGUISHABLE, NOT_INFORMATIVE}

# ------------------------------------------------------------------------------------------------ verdict rules


def test_every_direction_of_better_has_a_rule():
    assert set(RULES) == set(get_args(Better))


def test_lower_is_held_to_the_retrained_models_highest_upper_bound():
    common = dict(key="k", label="K", metric="m", better="lower", yardsticks=[(0.1, 0.3), (0.2, 0.4)])
    leak = judge(value=0.9, interval=[0.5, 1.0], **common)
    assert leak.verdict == LEAKS and leak.threshold == 0.4 and leak.excess == pytest.approx(0.5)
    assert judge(value=0.9, interval=[0.4, 1.0], **common).verdict == INDISTINGUISHABLE  # interval reaches 0.4
    assert judge(value=0.9, interval=[0.5, 1.0], informative=False, **common).verdict == NOT_INFORMATIVE
    assert judge(value=0.9, interval=[0.5, 1.0], concern="retain", **common).verdict == SHORTFALL


def test_higher_is_held_to_the_lowest_lower_bound():
    common = dict(key="k", label="K", metric="m", better="higher", yardsticks=[(90.0, 95.0), (85.0, 99.0)])
    assert judge(value=80.0, interval=[78.0, 84.9], **common).verdict == LEAKS
    assert judge(value=80.0, interval=[78.0, 85.0], **common).verdict == INDISTINGUISHABLE
    assert judge(value=100.0, interval=None, **common).verdict == INDISTINGUISHABLE


def test_an_ideal_is_reached_by_the_interval_and_below_chance_is_no_leak():
    common = dict(key="k", label="K", metric="m", better="50")
    assert judge(value=60.0, interval=[49.0, 70.0], **common).verdict == INDISTINGUISHABLE
    assert judge(value=60.0, interval=[51.0, 70.0], **common).verdict == LEAKS
    assert judge(value=40.0, interval=[35.0, 45.0], **common).verdict == INDISTINGUISHABLE
    assert judge(value=0.7, interval=[0.6, 0.8], key="k", label="K", metric="m", better="0.5").verdict == LEAKS


def test_floor_excess_is_given_in_floor_widths():
    verdict = judge(key="u", label="U", metric="utv", better="lower", value=0.5, interval=[0.45, 0.55],
                    floor=(0.1, 0.2), yardsticks=[(0.0, 0.0)])
    assert verdict.verdict == LEAKS and verdict.threshold == 0.2
    assert verdict.excess == pytest.approx(0.3) and verdict.excess_widths == pytest.approx(3.0)


def test_none_is_never_tested():
    assert judge(key="k", label="K", metric="m", better="none", value=1.0, interval=None) is None


def test_the_original_is_the_positive_control():
    tests = [judge(key=k, label=k, metric="m", better="lower", value=0.1, interval=None, yardsticks=[(0, 0.2)])
             for k in ("seen", "blind")]
    control = [judge(key="seen", label="", metric="m", better="lower", value=0.9, interval=None,
                     yardsticks=[(0, 0.2)]),
               judge(key="blind", label="", metric="m", better="lower", value=0.1, interval=None,
                     yardsticks=[(0, 0.2)])]
    apply_control(tests, control)
    assert [t.verdict for t in tests] == [INDISTINGUISHABLE, NOT_INFORMATIVE]
    assert tests[1].evidence["original_passes"] is True
    assert overall(tests) == (INDISTINGUISHABLE, 0)
    tests[0].verdict = LEAKS
    assert overall(tests) == (LEAKS, 1)


def _toy_metric() -> str:
    """A metric registered here, as a user's new metric file would: mean p(f) on the forget test samples."""
    name = "toy_forget_confidence"

    @register(name, summary="mean probability of the forget classes on their own test samples",
              columns=[Column("toy_pf", "toy p(f)", "lower", decimals=4)], default=False)
    def compute(ctx):
        probs = ctx.target.test_probs[ctx.splits.test_f][:, ctx.forget].sum(1).double().numpy()
        from fastforget.metrics.intervals import bootstrap_mean

        return {"toy_pf": float(probs.mean()), "toy_pf_ci": bootstrap_mean(probs, seed=ctx.seed)}

    return name


def test_a_new_metric_is_audited_without_editing_the_audit():
    name = _toy_metric()
    try:
        verdicts = output_verdicts([name], {"toy_pf": 0.8, "toy_pf_ci": [0.7, 0.9]},
                                   [{"toy_pf": 0.01, "toy_pf_ci": [0.0, 0.02]}])
    finally:
        unregister(name)
    assert [(v.key, v.verdict, v.threshold) for v in verdicts] == [("toy_pf", LEAKS, 0.02)]


# ------------------------------------------------------------------------------------------------ white-box


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_penultimate_features_are_the_classifier_input(digits):
    torch.manual_seed(0)
    model = build_model("cnn", 10, 1, width=8).eval()
    images = digits.test_images[:37]
    features = penultimate_features(model, images, digits, batch_size=16)
    mean, std = (torch.tensor(stat).view(1, -1, 1, 1) for stat in (digits.mean, digits.std))
    x = (images.float() / 255 - mean) / std
    with torch.no_grad():
        expected = model.pool(model.block2(model.block1(model.conv1(x)))).flatten(1)  # the CNN written out
        assert torch.allclose(model.fc(expected), model(x), atol=1e-5)
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-5)
    masked = LogitMask(copy.deepcopy(model), [3], 10)
    assert classifier_layer(masked) is masked.base.fc
    torch.testing.assert_close(penultimate_features(masked, images, digits), features)


def test_weight_change_sees_through_wrappers_and_counts_every_changed_tensor():
    torch.manual_seed(0)
    original = build_model("cnn", 10, 1, width=8)
    tensors = len(original.state_dict())
    assert weight_change(copy.deepcopy(original), original).all_identical
    masked = weight_change(LogitMask(copy.deepcopy(original), [3], 10), original)
    assert masked.all_identical and masked.missing == 0
    block = original.middle_block
    adapted = weight_change(IdentityAdapters(copy.deepcopy(original), block, original.block_channels[block], 10),
                            original)
    assert adapted.all_identical and adapted.extra == 4  # two adapters, weight and bias each
    changed = copy.deepcopy(original)
    with torch.no_grad():
        changed.fc.weight[2, 5] += 0.25
    change = weight_change(changed, original)
    assert not change.all_identical and change.identical == tensors - 1
    assert change.max_abs_change == pytest.approx(0.25)


def test_plan_counts_what_is_missing_and_estimates_from_the_recorded_time(digits, tmp_path):
    from fastforget.audit.references import retrained_folder
    from fastforget.config import load_config

    cfg = load_config("digits", TINY)
    settings = {"shadows": 3, "reference_models": 4}.__getitem__
    cached = retrained_folder(cfg, digits, [3], 7, tmp_path)
    cached.mkdir(parents=True)
    (cached / "model.json").write_text("{}")  # a finished reference: not counted again
    plan = plan_references(cfg, digits, [3], ["accuracy", "ulira", "rmia"], settings=settings, cache_dir=tmp_path,
                           retrained_seeds=[7, 8], original_meta={"train_seconds": 10.0}, replay_seconds=2.0)
    steps = {s.what: (s.needed, s.to_train) for s in plan.steps}
    assert steps == {"retrained references": (2, 1), "U-LIRA shadow original": (3, 3),
                     "U-LIRA shadow retrained": (3, 3), "U-LIRA method replays": (3, 3), "RMIA references": (4, 4)}
    retained = float((digits.train_labels != 3).float().mean())
    expected = 10.0 * retained * (1 + 3) + 10.0 * 3 + 2.0 * 3 + 5.0 * 4
    assert plan.seconds == pytest.approx(expected)
    assert plan.to_train == 14 and "14 models to train" in plan.describe()
    unknown = plan_references(cfg, digits, [3], ["accuracy"], settings=settings, cache_dir=tmp_path,
                              retrained_seeds=[9], original_meta={}, replay_seconds=None)
    assert unknown.seconds is None and "time unknown" in unknown.describe()


# ------------------------------------------------------------------------------------------------ digits audits


def run_cli(patch: pytest.MonkeyPatch, argv: list[str]) -> int:
    """`fastforget ARGV` in-process through `cli.main()`: its exit status."""
    from fastforget import cli

    patch.setattr("sys.argv", ["fastforget", *argv])
    try:
        cli.main()
    except SystemExit as exit_info:
        return int(exit_info.code or 0)
    return 0


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.contextmanager
def _registered(name: str):
    """Unregister the metric `name` on the way out, whatever happens."""
    try:
        yield
    finally:
        unregister(name)


@pytest.fixture(scope="module")
def audits(tmp_path_factory):
    """Audits of the original, of rw-mask and of a retrained model (the latter two through the CLI), with the
    toy metric registered as a user's new metric."""
    from fastforget.config import load_config
    from fastforget.train import train_model

    root = tmp_path_factory.mktemp("audit")
    cfg = load_config("digits", TINY)
    train_model(cfg, seed=0, out_dir=root / "original")
    api.unlearn("rw-mask", root / "original", ["3"], out=root / "rw-mask")
    name = _toy_metric()
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as patch, _registered(name):
        patch.setenv("FASTFORGET_CACHE", str(root / "cache"))
        reports = {"original": api.audit(root / "original", original=root / "original", forget=["3"],
                                         out=root / "audit-original", options=SETTINGS, echo=lines.append)}
        retrained = next(m["path"] for m in reports["original"]["provenance"]["models"]
                         if m["role"] == "retrained" and m["seed"] == 0)
        codes = {}
        for role, checkpoint in (("rw-mask", root / "rw-mask"), ("retrained", retrained)):
            argv = ["audit", "--checkpoint", str(checkpoint), "--original", str(root / "original"), "--out",
                    str(root / f"audit-{role}"), "--shadows", "2", "--reference-models", "2"]
            codes[role] = run_cli(patch, argv)
            reports[role] = json.loads((root / f"audit-{role}" / "audit.json").read_text())
    return {"root": root, "reports": reports, "codes": codes, "lines": lines, "retrained": retrained}


def _verdicts(report: dict, kind: str | None = None) -> dict[str, str]:
    return {t["key"]: t["verdict"] for t in report["tests"] if kind is None or t["kind"] == kind}


def test_retrained_model_audits_as_indistinguishable(audits):
    report = audits["reports"]["retrained"]
    verdicts = _verdicts(report)
    assert set(verdicts.values()) <= PASSING, verdicts
    informative = {k for k, v in verdicts.items() if v == INDISTINGUISHABLE}
    assert {"acc_f_test", "mia_nn", "utv_test", "ulira", "weights_identical", "probe_acc_f", "toy_pf"} <= informative
    assert report["answer"] == INDISTINGUISHABLE and audits["codes"]["retrained"] == 0
    seeds = [m["seed"] for m in report["provenance"]["models"] if m["role"] == "retrained"]
    assert seeds == [1, 2]  # compared with other seeds, never with itself


def test_original_leaks_on_every_informative_test(audits):
    report = audits["reports"]["original"]
    verdicts = {k: v for k, v in _verdicts(report).items()
                if next(t for t in report["tests"] if t["key"] == k)["concern"] == "forget"}
    assert set(verdicts.values()) <= {LEAKS, NOT_INFORMATIVE}, verdicts
    leaking = {k for k, v in verdicts.items() if v == LEAKS}
    assert {"acc_f_test", "acc_f_train", "mia_nn", "utv_test", "utv_train", "ulira", "weights_identical",
            "probe_acc_f", "toy_pf"} <= leaking
    assert report["answer"] == LEAKS and report["exit_code"] == 1


def test_rw_mask_passes_output_tests_but_not_the_white_box_ones(audits):
    report = audits["reports"]["rw-mask"]
    output = _verdicts(report, "output")
    paper = {k: v for k, v in output.items() if not k.startswith("ulira")}
    assert set(paper.values()) <= PASSING, paper
    assert {"acc_f_test", "mia_nn", "utv_test", "toy_pf"} <= {k for k, v in paper.items() if v == INDISTINGUISHABLE}
    assert _verdicts(report, "white-box") == {"weights_identical": LEAKS, "probe_acc_f": LEAKS}
    # U-LIRA catches it from the outputs alone: a masked class has probability exactly 0, a retrained one does not.
    assert output["ulira"] == LEAKS
    assert audits["codes"]["rw-mask"] == 1


def test_references_are_trained_once_with_an_estimate_and_reused(audits):
    first = audits["reports"]["original"]["references"]
    assert first["to_train"] == 8 and first["estimated_seconds"] > 0  # 2 retrained, 2 + 2 shadows, 2 RMIA
    taken = first["seconds_training_or_loading"]
    print(f"references: estimated {first['estimated_seconds']:.1f} s, took {taken:.1f} s")
    assert any("models to train" in line and "about" in line for line in audits["lines"])
    steps = {s["what"]: s for s in audits["reports"]["rw-mask"]["references"]["steps"]}
    assert steps["U-LIRA shadow original"]["to_train"] == 0 and steps["RMIA references"]["to_train"] == 0


def test_audit_json_holds_every_number_and_its_provenance(audits):
    report = audits["reports"]["rw-mask"]
    for test in report["tests"]:
        assert test["threshold"] is not None and test["test"] and test["verdict"]
        if test["kind"] == "output":
            assert report["results"][test["key"]] == test["value"]
    provenance = report["provenance"]
    assert [m["role"] for m in provenance["models"]] == ["audited", "original", "retrained", "retrained"]
    assert all(len(m["weights_sha256"]) == 64 for m in provenance["models"])
    assert provenance["data_fingerprint"]["train_size"] > 0 and provenance["config"]["model"]["width"] == 8
    assert {"torch", "fastforget", "device"} <= set(provenance["versions"])
    assert report["retrained_results"] and report["original_results"]["acc_f_test"] > 50


def test_markdown_lists_every_test(audits):
    text = (audits["root"] / "audit-original" / "audit.md").read_text()
    report = audits["reports"]["original"]
    assert f"**Answer: {LEAKS}**" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == len(report["tests"]) + 1


def test_usage_errors_exit_2(audits, tmp_path, capsys):
    root = audits["root"]
    cases = [["--original", str(root / "original"), "--out", str(tmp_path)],  # no --checkpoint
             ["--checkpoint", str(root / "rw-mask"), "--original", str(root / "original"), "--out",
              str(root / "audit-rw-mask")],  # the audit files exist: --overwrite
             ["--checkpoint", audits["retrained"], "--original", str(root / "original"), "--retrained",
              audits["retrained"], "--out", str(tmp_path)]]  # audited model as its own yardstick
    with pytest.MonkeyPatch.context() as patch:
        for argv in cases:
            assert run_cli(patch, ["audit", *argv]) == 2, argv
            assert capsys.readouterr().err.startswith("error: ")


# ------------------------------------------------------------------------------------------------ HTML


def render(page: Path, out: Path) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """Chromium headless on a local file: (the DOM dump, the screenshot run), each with its stderr log."""
    browser = _chromium()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--enable-logging=stderr", "--v=0"]

    def run(*extra: str, profile: str) -> subprocess.CompletedProcess:
        return subprocess.run([browser, *flags, f"--user-data-dir={out / profile}", *extra, page.as_uri()],
                              capture_output=True, text=True, timeout=120)

    return (run("--dump-dom", "--virtual-time-budget=2000", profile="dom"),
            run(f"--screenshot={out / 'page.png'}", "--window-size=1400,1800", "--hide-scrollbars",
                profile="shot"))


def console_messages(log: str) -> list[str]:
    """What the page wrote to its console (errors, uncaught exceptions): the audit page writes nothing."""
    return [line for line in log.splitlines() if ":CONSOLE" in line]


needs_chromium = pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (scripts/setup.sh "
                                                                "installs it from Debian's packages)")


@needs_chromium
def test_console_check_catches_a_broken_page(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><p>x</p><script>throw new Error('boom')</script></body></html>")
    dom, _ = render(page, tmp_path)
    assert any("boom" in line for line in console_messages(dom.stderr))


@needs_chromium
def test_audit_html_renders_in_headless_chromium(audits, tmp_path):
    from PIL import Image

    report = audits["reports"]["original"]
    page = audits["root"] / "audit-original" / "audit.html"
    assert "src='http" not in page.read_text() and "href='http" not in page.read_text()  # self-contained
    dom, shot = render(page, tmp_path)
    assert dom.returncode == 0 and shot.returncode == 0, dom.stderr[-2000:] + shot.stderr[-2000:]
    assert console_messages(dom.stderr) == [] and console_messages(shot.stderr) == []
    rows = dom.stdout.count("<tr class=\"verdict ")
    assert rows == len(report["tests"])
    assert 'data-images-decoded="2/2"' in dom.stdout  # the embedded figures decoded
    assert f'data-answer="{LEAKS}"' in dom.stdout
    pixels = np.asarray(Image.open(tmp_path / "page.png").convert("RGB")).astype(int)
    assert pixels.std() > 20  # not blank
    leak_cells = (np.abs(pixels - np.array([247, 201, 201])).sum(-1) < 12).sum()
    pass_cells = (np.abs(pixels - np.array([217, 242, 217])).sum(-1) < 12).sum()
    assert leak_cells > 2000 and pass_cells > 500  # the verdict table's coloured cells are on screen
