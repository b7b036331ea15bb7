"""RMIA: the offline marginal and log ratio against a brute-force loop, `a` tuned on the references, TPR at 1% FPR
against a threshold sweep, and a forget set whose probabilities are ~0 still ranked (it collapsed to 0.5)."""

import numpy as np
import pytest
from metric_helpers import assert_json_ready, probs_with
from sklearn.metrics import roc_auc_score

from fastforget.metrics import rmia, tune_a
from fastforget.metrics.rmia import log_marginal, log_ratio, membership_separation


def test_offline_log_ratio_matches_a_brute_force_loop(rng):
    num_refs, n, a = 4, 30, 0.4
    target, reference = rng.uniform(0, 1, n), rng.uniform(0, 1, (num_refs, n))
    is_in = rng.random((num_refs, n)) < 0.5
    is_in[rng.integers(0, num_refs, n), np.arange(n)] = False  # at least one OUT model per sample
    expected = []
    for j in range(n):
        out = [reference[r, j] for r in range(num_refs) if not is_in[r, j]]
        p_out = sum(out) / len(out)
        expected.append(target[j] / (((1 + a) * p_out + (1 - a)) / 2))
    assert np.exp(log_ratio(np.log(target), np.log(reference), is_in, a)) == pytest.approx(expected)
    everything_in = is_in.copy()
    everything_in[:, 0] = True
    with pytest.raises(ValueError, match="no OUT reference model"):
        log_marginal(np.log(reference), everything_in, a)


def rmia_setting(rng: np.random.Generator, member_confidence: tuple[float, float], num_refs: int = 4):
    """Target and references on 400 training + 400 unseen samples (K=5, forget class 0)."""
    num_classes, n = 5, 800
    labels = rng.integers(0, num_classes, n)
    members = np.arange(n) < 400
    target_conf = np.where(members, rng.uniform(*member_confidence, n), rng.uniform(0.3, 0.8, n))
    target = probs_with(rng, labels, target_conf, num_classes)
    reference = np.stack([probs_with(rng, labels, rng.uniform(0.3, 0.8, n), num_classes) for _ in range(num_refs)])
    return dict(target_x=target, labels_x=labels, members_x=members, reference_x=reference, forget=[0])


def test_rmia_detects_overconfident_members(rng):
    result = rmia(**rmia_setting(rng, (0.9, 1.0)), a=0.3)
    assert result.forget.auc > 0.9 and result.retain.auc > 0.9 and result.retain.tpr_at_1pct_fpr > 0.3
    assert result.forget.auc_ci[0] < result.forget.auc <= result.forget.auc_ci[1]
    assert result.forget.n_members + result.retain.n_members == 400
    assert_json_ready(result)


def test_rmia_is_chance_when_members_look_unseen(rng):
    result = rmia(**rmia_setting(rng, (0.3, 0.8)), a=0.3)
    assert abs(result.retain.auc - 0.5) < 0.1 and abs(result.forget.auc - 0.5) < 0.2


def test_a_forget_set_with_probabilities_near_zero_is_still_ranked(rng):
    """After forgetting, p_f(x) is ~1e-9 on every forget sample: RMIA's comparison with a population of retained
    samples tied all of them at score 0 (AUC exactly 0.5). A model that still keeps its training samples apart
    (log p_f of -18 on them, -22 on unseen ones) must be caught, one that does not must not."""
    setting = rmia_setting(rng, (0.3, 0.8))
    labels, members = setting["labels_x"], setting["members_x"]
    is_forget = labels == 0
    log_pf = np.where(members, rng.normal(-18, 1, 800), rng.normal(-22, 1, 800))
    aucs = {}
    for leaks in (True, False):
        logits = np.log(setting["target_x"])
        logits[is_forget, 0] = log_pf[is_forget] if leaks else rng.normal(-20, 1, is_forget.sum())
        aucs[leaks] = rmia(logits, labels, members, np.log(setting["reference_x"]), [0], from_logits=True,
                           a=0.3).forget.auc
    assert aucs[True] > 0.95 and abs(aucs[False] - 0.5) < 0.15


def test_a_is_tuned_on_the_references_themselves(rng):
    """References trained on complementary halves, overfitting their members: the grid's best `a` must be the one
    whose mean AUC of each reference against the others is highest, and that AUC is what an independent loop gives."""
    num_refs, n, num_classes = 4, 600, 5
    labels = rng.integers(0, num_classes, n)
    halves = rng.random((num_refs // 2, n)) < 0.5
    reference_in = np.concatenate([halves, ~halves])[[0, 2, 1, 3]]  # models 0/1 and 2/3 complementary
    confidence = np.where(reference_in, rng.uniform(0.7, 1.0, (num_refs, n)), rng.uniform(0.2, 0.9, (num_refs, n)))
    reference = np.log(np.stack([probs_with(rng, labels, c, num_classes) for c in confidence]))
    log_p = np.take_along_axis(reference, labels[None, :, None], -1)[..., 0]
    best, grid = tune_a(log_p, reference_in)
    assert best == max(grid, key=grid.get)
    for a in (0.0, 0.5, 1.0):
        aucs = []
        for r in range(num_refs):
            others = [o for o in range(num_refs) if o != r]
            usable = (~reference_in[others]).any(0)
            scores = log_ratio(log_p[r, usable], log_p[others][:, usable], reference_in[others][:, usable], a)
            aucs.append(roc_auc_score(reference_in[r, usable], scores))
        assert grid[a] == pytest.approx(np.mean(aucs))
    tuned = rmia(**rmia_setting(rng, (0.9, 1.0)))
    assert tuned.a_tuned and f"{tuned.a:.2f}" in tuned.a_grid_auc


def test_membership_separation_matches_a_threshold_sweep(rng):
    members = rng.random(500) < 0.3
    scores = np.round(rng.normal(members * 1.5, 1.0), 1)  # rounded: ties
    separation = membership_separation(scores, members)
    pairs = [(m, n) for m in scores[members] for n in scores[~members]]
    assert separation.auc == pytest.approx(np.mean([1.0 if m > n else 0.5 if m == n else 0.0 for m, n in pairs]))
    best_tpr = max(np.mean(scores[members] >= t) for t in np.unique(np.r_[scores, np.inf])
                   if np.mean(scores[~members] >= t) <= 0.01)
    assert separation.tpr_at_1pct_fpr == pytest.approx(best_tpr)
    assert (separation.n_members, separation.n_nonmembers) == (members.sum(), (~members).sum())
