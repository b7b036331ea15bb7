"""The baseline unlearning methods on real digits data: contracts every method keeps, and each method's own
defining property checked against an independent float64 computation where it has one."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import DIGITS_FORGET
from torch import nn

from fastforget.errors import FastForgetError
from fastforget.inference import accuracy, predict_logits
from fastforget.train import Batch
from fastforget.unlearn import UnlearnContext, run_method
from fastforget.unlearn.boundary import adversarial_labels
from fastforget.unlearn.common import random_relabel, retained_classes
from fastforget.unlearn.l1 import l1_sparse_loss
from fastforget.unlearn.salun import saliency_masks
from fastforget.unlearn.svd import layer_input_rows

CPU = torch.device("cpu")

# Tiny budgets: the contract tests check behaviour, not unlearning quality.
QUICK = {
    "ft": {"epochs": 1}, "rl": {"epochs": 1}, "ga": {"epochs": 1}, "l1": {"epochs": 1},
    "bu": {"epochs": 1}, "bu-expand": {"epochs": 1}, "salun": {"epochs": 1}, "svd": {}, "ssd": {},
}


@pytest.fixture(scope="module")
def digits():
    from fastforget.data import load_dataset

    return load_dataset("digits")


def make_ctx(original, digits, cfg, forget=DIGITS_FORGET) -> UnlearnContext:
    return UnlearnContext(original=original.model, meta=original.meta, dataset=digits, forget=list(forget),
                          cfg=cfg, device=CPU)


@pytest.fixture
def ctx(digits_original, digits, digits_cfg) -> UnlearnContext:
    return make_ctx(digits_original, digits, digits_cfg)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def normalised(images: torch.Tensor, mean, std) -> torch.Tensor:
    """The oracle's own normalisation, in float64."""
    mean_t = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
    return (images.double() / 255.0 - mean_t) / std_t


def split_accuracies(model: nn.Module, ctx: UnlearnContext) -> tuple[float, float]:
    """(ACC_r, ACC_f) on the test split, in percent."""
    logits = predict_logits(model, ctx.dataset.test_images, ctx.dataset)
    labels = ctx.dataset.test_labels
    return (accuracy(logits[ctx.splits.test_r], labels[ctx.splits.test_r]),
            accuracy(logits[ctx.splits.test_f], labels[ctx.splits.test_f]))


def assert_same_architecture_and_changed(model: nn.Module, original_state: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert list(state) == list(original_state)
    assert all(state[k].shape == original_state[k].shape for k in state)
    assert any(not torch.equal(state[k], original_state[k]) for k in state), "the method returned the original"
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize("method", sorted(QUICK))
def test_method_keeps_architecture_changes_copy_and_leaves_original_untouched(method, ctx, digits_original):
    before = snapshot(digits_original.model)
    result = run_method(method, ctx, QUICK[method])
    assert result.model is not digits_original.model
    assert_same_architecture_and_changed(result.model, before)
    after = digits_original.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items()), "the original model was modified"
    logits = predict_logits(result.model, ctx.dataset.test_images[:7], ctx.dataset)
    assert logits.shape == (7, ctx.num_classes)  # bu-expand's shadow class is pruned away again


@pytest.mark.parametrize("method", ["ft", "rl", "salun", "svd", "ssd"])
def test_several_forget_classes(method, digits_original, digits, digits_cfg):
    ctx = make_ctx(digits_original, digits, digits_cfg, forget=[3, 8])
    assert len(ctx.splits.train_f) > 0 and set(digits.train_labels[ctx.splits.train_f].tolist()) == {3, 8}
    result = run_method(method, ctx, QUICK[method])
    assert_same_architecture_and_changed(result.model, snapshot(digits_original.model))


def test_retrain_forgets_everything_and_keeps_retained_accuracy(ctx, digits_original):
    original_r, original_f = split_accuracies(digits_original.model, ctx)
    result = run_method("retrain", ctx)
    retrained_r, retrained_f = split_accuracies(result.model, ctx)
    assert original_f > 80.0
    assert retrained_f == 0.0
    assert abs(retrained_r - original_r) <= 2.0, (retrained_r, original_r)


def test_unknown_hyperparameter_is_a_clear_error(ctx):
    with pytest.raises(FastForgetError, match=r"'ft'.*epoch.*it takes.*epochs"):
        run_method("ft", ctx, {"epoch": 3})


def test_random_relabel_draws_uniformly_among_retained_classes():
    forget = torch.tensor([3, 8])
    retained = retained_classes([3, 8], 10, CPU)
    assert retained.tolist() == [0, 1, 2, 4, 5, 6, 7, 9]
    labels = torch.randint(10, (80_000,))
    relabelled = random_relabel(labels, forget, retained)
    is_forget = torch.isin(labels, forget)
    assert torch.equal(relabelled[~is_forget], labels[~is_forget])
    drawn = relabelled[is_forget]
    assert not torch.isin(drawn, forget).any()
    counts = torch.bincount(drawn, minlength=10)[retained].double()
    expected = len(drawn) / len(retained)
    assert ((counts - expected).abs() < 5 * expected**0.5).all(), counts  # 5 sigma of a binomial count
    assert not torch.equal(random_relabel(labels, forget, retained)[is_forget], drawn)  # fresh every call


def test_ga_raises_the_forget_loss(ctx, digits_original):
    def forget_loss(model: nn.Module) -> float:
        logits = predict_logits(model, ctx.dataset.train_images[ctx.splits.train_f], ctx.dataset)
        return F.cross_entropy(logits, ctx.dataset.train_labels[ctx.splits.train_f]).item()

    result = run_method("ga", ctx, {"epochs": 10, "freeze_bn": True, "batch_size": 128})
    assert forget_loss(result.model) > 1.1 * forget_loss(digits_original.model)


def test_l1_penalty_decays_linearly_to_zero(digits_original):
    model = copy.deepcopy(digits_original.model).double()
    images = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    batch = Batch(images, torch.randint(10, (5,)), torch.arange(5))
    plain = F.cross_entropy(model(images), batch.labels)
    l1 = torch.cat([p.flatten() for p in model.parameters()]).norm(1)
    loss = l1_sparse_loss(alpha=5e-4)
    for progress in (0.0, 0.25, 1.0):
        value, _ = loss(model, batch, progress)
        torch.testing.assert_close(value, plain + 5e-4 * (1 - progress) * l1)


def test_boundary_labels_match_a_float64_fgsm(ctx, digits_original):
    images = normalised(ctx.dataset.train_images[ctx.splits.train_f], ctx.dataset.mean, ctx.dataset.std)
    labels = ctx.dataset.train_labels[ctx.splits.train_f]
    got = adversarial_labels(digits_original.model, images.float(), labels, 0.1)
    oracle = copy.deepcopy(digits_original.model).double().eval()
    x = images.clone().requires_grad_(True)
    F.cross_entropy(oracle(x), labels).backward()
    expected = oracle(images + 0.1 * x.grad.sign()).argmax(1)
    assert (got == expected).float().mean() >= 0.98


def forget_saliency_oracle(ctx: UnlearnContext) -> dict[str, torch.Tensor]:
    model = copy.deepcopy(ctx.original).double().eval()
    images = normalised(ctx.dataset.train_images[ctx.splits.train_f], ctx.dataset.mean, ctx.dataset.std)
    F.cross_entropy(model(images), ctx.dataset.train_labels[ctx.splits.train_f], reduction="sum").backward()
    return {name: p.grad.abs() for name, p in model.named_parameters()}


def test_salun_mask_is_the_global_top_fraction_of_forget_saliency(ctx):
    masks = saliency_masks(ctx, ctx.copy_original(), 0.3, 64)
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == int(0.3 * total)
    oracle = forget_saliency_oracle(ctx)
    threshold = torch.cat([s.flatten() for s in oracle.values()]).kthvalue(total - int(0.3 * total) + 1).values
    for name, mask in masks.items():
        clearly_in = oracle[name] > threshold * 1.001
        clearly_out = oracle[name] < threshold * 0.999
        assert mask[clearly_in].eq(1).all() and mask[clearly_out].eq(0).all(), name
    with pytest.raises(FastForgetError, match="ratio"):
        saliency_masks(ctx, ctx.copy_original(), 0.0, 64)


@pytest.mark.parametrize("freeze_bn", [False, True])
def test_salun_leaves_weights_outside_the_mask_bit_identical(ctx, digits_original, freeze_bn):
    masks = saliency_masks(ctx, ctx.copy_original(), 0.5, 128)
    before = snapshot(digits_original.model)
    result = run_method("salun", ctx, {"epochs": 2, "freeze_bn": freeze_bn, "weight_decay": 5e-4,
                                       "momentum": 0.9})
    after = result.model.state_dict()
    changed_inside = 0
    for name, mask in masks.items():
        outside = mask == 0
        assert torch.equal(after[name][outside], before[name][outside]), name
        changed_inside += int((after[name][~outside] != before[name][~outside]).sum())
    assert changed_inside > 0.5 * sum(int(m.sum()) for m in masks.values())
    buffers_equal = all(torch.equal(after[k], before[k]) for k in before if k not in masks)
    assert buffers_equal == freeze_bn  # BatchNorm statistics move unless frozen


def fisher_oracle(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, names: list[str],
                  batch_size: int) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    totals = {n: torch.zeros_like(params[n]) for n in names}
    batches = range(0, len(labels), batch_size)
    for start in batches:
        model.zero_grad()
        F.cross_entropy(model(images[start:start + batch_size]), labels[start:start + batch_size]).backward()
        for n in names:
            totals[n] += params[n].grad**2
    return {n: t / len(batches) for n, t in totals.items()}


@pytest.mark.parametrize(("alpha", "lam"), [(10.0, 1.0), (2.0, 5.0)])  # the second exercises the cap at 1
def test_ssd_dampens_exactly_where_forget_importance_dominates(ctx, digits_original, alpha, lam):
    result = run_method("ssd", ctx, {"alpha": alpha, "lambda": lam, "batch_size": 128})
    oracle = copy.deepcopy(digits_original.model).double().eval()
    train = ctx.dataset
    names = ["fc.weight", "block2.0.weight", "conv1.1.weight"]
    everything = normalised(train.train_images, train.mean, train.std)
    importance_d = fisher_oracle(oracle, everything, train.train_labels, names, 128)
    importance_f = fisher_oracle(oracle, everything[ctx.splits.train_f], train.train_labels[ctx.splits.train_f],
                                 names, 128)
    original = dict(digits_original.model.named_parameters())
    dampened = dict(result.model.named_parameters())
    selected_anywhere = 0
    for name in names:
        ratio = importance_f[name] / (alpha * importance_d[name])
        clear = (ratio - 1).abs() > 1e-3  # leave out the knife's edge, where float32 may decide either way
        selected = ratio > 1
        theta = original[name].detach().double()
        expected = torch.where(selected, theta * (lam * importance_d[name] / importance_f[name]).clamp(max=1), theta)
        unchanged = clear & ~selected
        assert torch.equal(dampened[name][unchanged], original[name][unchanged]), name
        torch.testing.assert_close(dampened[name][clear & selected].double(), expected[clear & selected],
                                   rtol=1e-3, atol=1e-7)
        selected_anywhere += int((clear & selected).sum())
    assert selected_anywhere > 0, "the check is vacuous: nothing was dampened"


@pytest.mark.parametrize(("kernel", "stride", "padding", "dilation"), [
    (3, 1, 1, 1), (1, 2, 0, 1), ((3, 2), (2, 1), (1, 2), 1), (3, 2, 2, 2), (5, 3, 0, (1, 2))])
def test_svd_conv_rows_match_unfold(kernel, stride, padding, dilation):
    conv = nn.Conv2d(3, 4, kernel, stride, padding, dilation)
    x = torch.randn(2, 3, 11, 9).to(memory_format=torch.channels_last)
    rows = layer_input_rows(conv, x)
    expected = F.unfold(x, kernel, dilation, padding, stride).transpose(1, 2).reshape(-1, rows.shape[1])
    assert torch.equal(rows, expected)
    # the rows are what the flattened weight multiplies: they reproduce the convolution
    out = conv(x)
    via_rows = (rows @ conv.weight.flatten(1).T + conv.bias).view(2, out.shape[2], out.shape[3], 4)
    torch.testing.assert_close(via_rows.permute(0, 3, 1, 2), out)


class FlatLinear(nn.Sequential):
    """A single linear layer on the flattened image: the SVD method's projection in its simplest setting."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__(nn.Flatten(), nn.Linear(in_features, num_classes))


def scaled_projection_oracle(activations: torch.Tensor, alpha: float) -> torch.Tensor:
    u, s, _ = torch.linalg.svd(activations.T, full_matrices=False)
    ratio = s**2 / (s**2).sum()
    return u @ torch.diag(alpha * ratio / ((alpha - 1) * ratio + 1)) @ u.T


def test_svd_projection_matches_a_hand_computation_on_one_linear_layer(digits, digits_cfg):
    torch.manual_seed(0)
    model = FlatLinear(64, 10)
    original = copy.deepcopy(model)
    ctx = UnlearnContext(original=model, meta={}, dataset=digits, forget=[3, 8], cfg=digits_cfg, device=CPU)
    alpha_r, alpha_f = 100.0, 3.0
    everything = {"samples_per_class": 10_000, "forget_samples": 10_000}  # all samples: no random subset
    result = run_method("svd", ctx, {"alpha_r": alpha_r, "alpha_f": alpha_f, **everything})
    images = normalised(digits.train_images, digits.mean, digits.std).flatten(1)
    m_r = scaled_projection_oracle(images[ctx.splits.train_r], alpha_r)
    m_f = scaled_projection_oracle(images[ctx.splits.train_f], alpha_f)
    projection = torch.eye(64, dtype=torch.float64) - (m_f - m_f @ m_r)
    expected = original[1].weight.detach().double() @ projection.T
    torch.testing.assert_close(result.model[1].weight.double(), expected, rtol=1e-4, atol=1e-6)
    assert torch.equal(result.model[1].bias, original[1].bias)
    assert not torch.allclose(result.model[1].weight, original[1].weight)


def test_ffcv_config_reaches_the_methods(tmp_path, monkeypatch, digits_original, digits, digits_cfg):
    """data.loader = "ffcv" feeds the methods too, with the batches of the in-memory loader (same seed): the same
    model comes out."""
    from fastforget.config import load_config
    from fastforget.data import FFCVLoader, ffcv_available

    if not ffcv_available():
        pytest.skip("ffcv is not installed (scripts/setup.sh installs it where apt is available)")
    monkeypatch.setenv("FASTFORGET_CACHE", str(tmp_path))
    models = {}
    for kind in ("memory", "ffcv"):
        cfg = load_config("digits", ["train.epochs=15", "model.width=16", f"data.loader={kind}"])
        ctx = UnlearnContext(original=digits_original.model, meta=digits_original.meta, dataset=digits,
                             forget=DIGITS_FORGET, cfg=cfg, device=torch.device("cpu"))
        assert isinstance(ctx.loader(ctx.splits.train_f, 16), FFCVLoader) == (kind == "ffcv")
        models[kind] = run_method("ga", ctx, {"epochs": 1}).model
    for (key, a), b in zip(models["memory"].state_dict().items(), models["ffcv"].state_dict().values(), strict=True):
        assert torch.equal(a, b), key
