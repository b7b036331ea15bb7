"""The evaluation runner on real digits models: the registered metrics against hand counts, the protocol around
them (one evaluation seed, the whole training split, which retrained model UTV uses, what a checkpoint is), and
`api.evaluate` end to end with U-LIRA, RMIA, intervals, the JSON report, the plots and the shadow-model cache."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DIGITS_FORGET

from fastforget import api, shadows
from fastforget.checkpoint import save_checkpoint
from fastforget.config import load_config
from fastforget.data import load_dataset
from fastforget.errors import ConfigError
from fastforget.evaluate import evaluate, model_outputs, train_rows
from fastforget.metrics import EvalOptions, Outputs, target_utv
from fastforget.train import train_model

SPEC_KEYS = {"acc_r_test", "acc_f_test", "acc_r_train", "acc_f_train", "mia", "mia_nn", "mia_nn_class", "utv_train",
             "utv_test"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def original_outputs(digits_original, digits) -> Outputs:
    return model_outputs(digits_original.model, digits)


@pytest.fixture(scope="module")
def retrained_outputs(digits_retrained, digits) -> Outputs:
    return model_outputs(digits_retrained.model, digits)


@pytest.fixture(scope="module")
def original_vs_retrained(digits, original_outputs, retrained_outputs) -> dict:
    results, skipped = evaluate(original_outputs, digits, DIGITS_FORGET, retrained=[retrained_outputs])
    assert skipped == {}
    return results


@pytest.fixture(scope="module")
def retrained_vs_itself(digits, retrained_outputs) -> dict:
    results, _ = evaluate(retrained_outputs, digits, DIGITS_FORGET, retrained=[retrained_outputs])
    return results


def test_mia_is_about_0_for_the_overfit_original_and_about_100_for_the_retrained(original_vs_retrained,
                                                                                 retrained_vs_itself):
    # The premise of the paper's MIA: the original fits its training set, forget classes included.
    assert original_vs_retrained["acc_r_train"] > 99 and original_vs_retrained["acc_f_train"] > 99
    # Measured over 5 SVM seeds and 3 model seeds: original 0.0-0.8, retrained 100.0.
    assert original_vs_retrained["mia"] < 10
    assert retrained_vs_itself["mia"] > 90


def _forget_rows(labels) -> np.ndarray:
    return np.isin(labels.numpy(), DIGITS_FORGET)


def test_mia_nn_nearest_class_is_the_retrained_models_most_predicted_retained_class(digits, retrained_outputs,
                                                                                    original_vs_retrained):
    logits = retrained_outputs.test.numpy().astype(np.float64)[_forget_rows(digits.test_labels)]
    logits[:, DIGITS_FORGET] = -np.inf
    hand_count = np.bincount(logits.argmax(1), minlength=digits.num_classes)
    assert original_vs_retrained["mia_nn_class"] == hand_count.argmax()
    assert original_vs_retrained["mia_nn_class_from"] == "retrained"
    assert 0.0 <= original_vs_retrained["mia_nn"] <= 1.0


def test_without_a_retrained_model_the_original_names_the_nearest_class_and_utv_is_skipped(digits,
                                                                                           original_outputs):
    results, skipped = evaluate(original_outputs, digits, DIGITS_FORGET, original=original_outputs,
                                options=EvalOptions(metrics=("mia_nn", "utv")))
    assert "utv_target_test" not in results  # an original is no RWFT model: no target to report
    probs = original_outputs.test_probs.numpy().astype(np.float64)[_forget_rows(digits.test_labels)]
    mean = probs.mean(0)
    mean[DIGITS_FORGET] = -np.inf
    assert results["mia_nn_class"] == mean.argmax()
    assert results["mia_nn_class_from"] == "original"
    assert "utv" not in results and "utv_train" not in results
    assert "retrained" in skipped["utv"]

    alone, skipped = evaluate(original_outputs, digits, DIGITS_FORGET, options=EvalOptions(metrics=("mia_nn",)))
    assert "mia_nn" not in alone and "--retrained" in skipped["mia_nn"]


def test_utv_is_0_against_itself_and_the_total_variation_of_original_and_retrained(digits, original_outputs,
                                                                                   retrained_outputs,
                                                                                   original_vs_retrained,
                                                                                   retrained_vs_itself):
    assert retrained_vs_itself["utv_train"] == pytest.approx(0.0, abs=1e-6)
    assert retrained_vs_itself["utv_test"] == pytest.approx(0.0, abs=1e-6)
    for split in ("train", "test"):
        rows = _forget_rows(getattr(digits, f"{split}_labels"))
        p_original = getattr(original_outputs, split).double().softmax(1).numpy()[rows]
        p_retrained = getattr(retrained_outputs, split).double().softmax(1).numpy()[rows]
        expected = 0.5 * np.abs(p_original - p_retrained).sum(1).mean()
        assert original_vs_retrained[f"utv_{split}"] == pytest.approx(expected, abs=1e-5)
        assert expected > 0.5  # the original is sure of the forget class, the retrained cannot predict it


@pytest.fixture(scope="module")
def saved(tmp_path_factory, digits_original, digits_retrained) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("saved")
    save_checkpoint(root / "original", digits_original.model, digits_original.meta)
    save_checkpoint(root / "retrained", digits_retrained.model, digits_retrained.meta)
    return {"original": root / "original", "retrained": root / "retrained"}


def test_api_evaluate_gives_the_same_mia_from_checkpoint_paths(saved, original_vs_retrained):
    report = api.evaluate(saved["original"] / "model.safetensors", forget=["3"], retrained=[saved["retrained"]],
                          metrics=["mia"])
    assert report["mia"] == pytest.approx(original_vs_retrained["mia"])
    assert report["forget"] == DIGITS_FORGET and report["method"] == "original"


@pytest.mark.parametrize("forget", [[5], [3, 5]])
def test_a_retrained_model_of_other_classes_is_refused(saved, forget):
    with pytest.raises(ConfigError, match=r"excluded classes \['3'\].*retrain without exactly the forget classes"):
        api.evaluate(saved["original"], forget=forget, retrained=[saved["retrained"]])


def test_every_model_of_a_comparison_is_attacked_on_the_same_rows(saved, tmp_path, digits_original):
    """The SVM attacks subsample with the evaluation seed, not the checkpoint's: the same model saved with two
    seeds gets the same attack (it did not: the held-out split followed the sidecar's seed)."""
    for seed in (0, 7):
        save_checkpoint(tmp_path / f"s{seed}", digits_original.model, {**digits_original.meta, "seed": seed})
    reports = [api.evaluate(tmp_path / f"s{seed}", forget=["3"], retrained=[saved["retrained"]],
                            metrics=["mia", "mia_nn"]) for seed in (0, 7)]
    for key in ("mia", "mia_attack_auc", "mia_nn", "mia_nn_attack_auc"):
        assert reports[0][key] == reports[1][key], key
    assert reports[0]["eval_seed"] == reports[1]["eval_seed"] == 0
    assert api.evaluate(tmp_path / "s7", forget=["3"], metrics=["mia"], options={"seed": 3})["eval_seed"] == 3


def test_the_whole_training_split_is_evaluated_unless_a_subsample_is_asked_for(data_root, saved):
    mnist = load_dataset("mnist", data_root)
    assert len(train_rows(mnist, EvalOptions().train_samples)) == 60000  # was a 10,000-sample subsample
    report = api.evaluate(saved["original"], forget=["3"], metrics=["accuracy"])
    assert report["train_samples_evaluated"] == report["train_samples_total"] == 1257
    sub = api.evaluate(saved["original"], forget=["3"], metrics=["accuracy"], options={"train_samples": 500})
    assert abs(sub["train_samples_evaluated"] - 500) <= 10


def test_a_retrained_checkpoint_forgets_what_it_excluded_and_is_called_retrain(saved):
    report = api.evaluate(saved["retrained"], metrics=["accuracy"])  # no --forget: the sidecar's `excluded`
    assert report["forget"] == DIGITS_FORGET and report["method"] == "retrain"
    assert report["acc_f_test"] == 0.0


def test_utv_uses_the_retrained_model_of_the_same_seed(saved, tmp_path, digits_retrained):
    other = copy.deepcopy(digits_retrained.model)  # another seed's model: other weights (identical ones are refused)
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    save_checkpoint(tmp_path / "retrained-s5", other, {**digits_retrained.meta, "seed": 5})
    with pytest.raises(ConfigError, match=r"seed 0.*\[5\].*--seed 0"):
        api.evaluate(saved["original"], forget=["3"], retrained=[tmp_path / "retrained-s5"], metrics=["utv"])
    report = api.evaluate(saved["original"], forget=["3"], retrained=[tmp_path / "retrained-s5", saved["retrained"]],
                          metrics=["utv"])
    assert report["retrained_seeds"] == [0, 5] and report["retrained"][0] == str(saved["retrained"])


@pytest.mark.parametrize("reassign", ["proportional", "max-class"])
def test_target_utv_follows_the_methods_reassignment_rule(saved, tmp_path, digits, digits_original,
                                                         original_outputs, retrained_outputs, reassign):
    """An RWFT model records its `reassign` rule; the target UTV builds q* with it (it always used proportional)."""
    meta = {**digits_original.meta, "method": "rwft-2-o", "forget": [3], "hyperparameters": {"reassign": reassign}}
    save_checkpoint(tmp_path / "rwft", digits_original.model, meta)
    report = api.evaluate(tmp_path / "rwft", original=saved["original"], retrained=[saved["retrained"]],
                          metrics=["utv"])
    rows = digits.test_labels == 3
    expected = target_utv(original_outputs.test[rows], retrained_outputs.test_probs[rows], [3], reassign=reassign)
    assert report["utv_target_test"] == pytest.approx(expected.utv, abs=1e-6)
    assert report["utv_target_reassign"] == reassign


@pytest.mark.parametrize("metric, option, fragment", [("ulira", {"shadows": 1}, "--shadows"),
                                                      ("rmia", {"reference_models": 1}, "--reference-models")])
def test_too_few_attack_models_is_a_clear_error_before_anything_trains(saved, monkeypatch, metric, option,
                                                                       fragment):
    monkeypatch.setattr(shadows, "train_model", lambda *a, **k: pytest.fail("trained a model for a refused run"))
    with pytest.raises(ConfigError, match=fragment):
        api.evaluate(saved["retrained"], retrained=[saved["retrained"]], metrics=[metric], options=option)


# --- U-LIRA, RMIA, JSON and plots through api.evaluate -------------------------------------------------------------

# Recorded in the sidecar: shadow models train with it too (bf16 autocast is slower for this CNN on CPU).
SMALL_RECIPE = ["train.epochs=4", "model.width=8", "train.amp=false"]
STRONG_OPTIONS = {"shadows": 2, "reference_models": 2}  # + the target's own pair: 3 U-LIRA pairs


@pytest.fixture(scope="module")
def small_unlearned(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("small")
    train_model(load_config("digits", SMALL_RECIPE), out_dir=root / "original")
    api.unlearn("rwft-2-o", root / "original", forget=[3], out=root / "unlearned", hyperparameters={"batch_size": 16})
    return {"root": root, "original": root / "original", "unlearned": root / "unlearned", "cache": root / "cache"}


@pytest.fixture(scope="module")
def full_report(small_unlearned, saved) -> dict:
    root = small_unlearned["root"]
    return api.evaluate(small_unlearned["unlearned"], original=small_unlearned["original"],
                        retrained=[saved["retrained"]],
                        metrics=["accuracy", "mia", "mia_nn", "utv", "reassignment", "ulira", "rmia"],
                        json_path=root / "report.json", plots_dir=root / "plots",
                        options={**STRONG_OPTIONS, "cache_dir": str(small_unlearned["cache"])})


def test_ulira_and_rmia_run_end_to_end_and_return_values_in_range(full_report):
    assert full_report["skipped"] == {}
    assert 0.0 <= full_report["ulira"] <= 100.0
    assert full_report["ulira_pairs"] == 3 and full_report["ulira_shadow_pairs"] == 2
    assert full_report["ulira_samples"] == 128  # every training sample of digit 3
    assert full_report["rmia_reference_models"] == 2 and full_report["rmia_a_tuned"]
    for key in ("rmia_auc_f", "rmia_auc_r", "rmia_tpr_at_1pct_fpr_f", "rmia_tpr_at_1pct_fpr_r"):
        assert 0.0 <= full_report[key] <= 1.0, key
    assert full_report["rmia_auc_f"] != 0.5  # RWFT's p_f ~ 0 tied every forget sample at exactly 0.5
    for key in ("acc_f_test", "mia_nn", "utv_test", "ulira", "rmia_auc_f"):
        low, high = full_report[f"{key}_ci"]
        assert low <= full_report[key] <= high, key
    assert isinstance(full_report["mia_informative"], bool)


def test_rmia_finds_no_membership_where_train_and_test_accuracy_agree(full_report):
    # 4 epochs do not overfit: nothing tells training from unseen retained samples, so RMIA's AUC stays near 0.5
    # (it read 0.96 when the training samples' Pr(x) came from IN models and the unseen ones' from a formula).
    assert abs(full_report["acc_r_train"] - full_report["acc_r_test"]) < 3
    assert full_report["rmia_auc_r"] < 0.7


def test_json_report_holds_the_spec_keys_with_json_native_values(full_report, small_unlearned):
    stored = json.loads((small_unlearned["root"] / "report.json").read_text())
    assert SPEC_KEYS | {"config", "versions", "seed", "ulira", "rmia_auc_f", "rmia_auc_r"} <= set(stored)
    # Native: the returned report serialises with no fallback and no NaN, and the file says the same.
    assert stored == json.loads(json.dumps(full_report, allow_nan=False))
    assert stored["forget"] == [3] and stored["method"] == "rwft-2-o"
    assert stored["config"]["train"]["epochs"] == 4


def test_plots_are_readable_png_files(full_report):
    import matplotlib.image

    paths = [Path(p) for p in full_report["plots"]]
    assert {p.name for p in paths} == {"accuracy_drop.png", "confusion.png", "reassignment_3.png"}
    for path in paths:
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and min(image.shape[:2]) > 100


def test_a_second_run_reuses_the_cached_shadow_and_reference_models(full_report, small_unlearned, saved,
                                                                     monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a cached shadow or reference model was trained again")

    monkeypatch.setattr(shadows, "train_model", no_training)
    again = api.evaluate(small_unlearned["unlearned"], retrained=[saved["retrained"]], metrics=["ulira", "rmia"],
                         options={**STRONG_OPTIONS, "cache_dir": str(small_unlearned["cache"])})
    for key in ("ulira", "rmia_auc_f", "rmia_auc_r"):
        assert again[key] == pytest.approx(full_report[key]), key


def test_train_split_metrics_on_a_stratified_subsample(digits_original, digits_retrained):
    """On request, training splits are evaluated on a seeded, class-stratified subsample shared by every model."""
    dataset = load_dataset("digits")
    rows = train_rows(dataset, 500)
    assert torch.equal(rows, train_rows(dataset, 500)) and torch.equal(rows, rows.sort().values)
    counts = torch.bincount(dataset.train_labels[rows], minlength=10).float()
    share = torch.bincount(dataset.train_labels, minlength=10).float() / len(dataset.train_labels)
    assert abs(len(rows) - 500) <= 10 and torch.allclose(counts / len(rows), share, atol=0.01)
    options = EvalOptions(metrics=("accuracy", "utv"), train_samples=500)
    results, _ = evaluate(digits_original.model, dataset, DIGITS_FORGET, retrained=[digits_retrained.model],
                          options=options)
    assert results["train_samples_evaluated"] == len(rows) and results["train_samples_total"] == 1257
    out = model_outputs(digits_original.model, dataset, rows)
    forget_rows = rows[dataset.train_labels[rows] == DIGITS_FORGET[0]]
    p = out.train_probs_at(forget_rows).double().numpy()
    q = model_outputs(digits_retrained.model, dataset, rows).train_probs_at(forget_rows).double().numpy()
    assert results["utv_train"] == pytest.approx(0.5 * np.abs(p - q).sum(1).mean(), rel=1e-5)
    with pytest.raises(ValueError, match="another subset"):
        out.train_probs_at(torch.tensor([int(torch.nonzero(~torch.isin(torch.arange(len(dataset.train_labels)),
                                                                        rows))[0])]))
