"""What a white-box attacker sees: whether the weights changed at all, and what a linear probe on the penultimate
features recovers of the forget class.

Output tests cannot see a class that is hidden rather than removed: RW-mask masks the forget logits and keeps every
weight bit-identical, so stripping the mask gives the original back. The probe asks the same of the features: an
attacker who holds the model, the retained classes' data and a few labelled samples of class f fits a linear
classifier on the classifier layer's input; the accuracy it reaches on the test samples of f is compared with the
same probe on the retrained models (whose features never learnt f, but may still separate it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn

from fastforget.data import ImageDataset
from fastforget.errors import ConfigError
from fastforget.inference import predict_logits
from fastforget.metrics.intervals import Interval, bootstrap_mean
from fastforget.models.contract import classifier_name

# Labelled forget samples per forget class the attacker holds. Few, because with many even a retrained model's
# features separate the class (digits, forgetting 3, probe ACC_f original / two retrained seeds: 1 shot 81 / 39, 21;
# 3 shots 93 / 66, 57; 10 shots 95 / 90, 84): the probe asks what the features know of f, not what the shots teach.
PROBE_SHOTS = 3
PROBE_DRAWS = 10  # draws of those samples, averaged: the probe's accuracy then depends less on which were drawn
PROBE_RETAINED = 2000  # retained-class training samples the probe is fitted on (class-stratified, at most)


def classifier_layer(model: nn.Module) -> nn.Module:
    """The layer whose input is the penultimate feature, found by the model contract's resolver (through
    fastforget's wrappers, for any model the methods can take)."""
    return model.get_submodule(classifier_name(model))


def penultimate_features(model: nn.Module, images: torch.Tensor, dataset: ImageDataset,
                         batch_size: int = 512) -> torch.Tensor:
    """The classifier layer's input [N, D] (fp32, CPU) on uint8 images, through a forward hook."""
    captured: list[torch.Tensor] = []

    def keep_input(_module: nn.Module, inputs: tuple, _output: torch.Tensor) -> None:
        captured.append(inputs[0].detach().flatten(1).float().cpu())

    handle = classifier_layer(model).register_forward_hook(keep_input)
    try:
        predict_logits(model, images, dataset, batch_size=batch_size)
    finally:
        handle.remove()
    return torch.cat(captured) if captured else torch.empty(0, 0)


@dataclass
class WeightChange:
    """How much of the original's weights survive, bit for bit, in the model under audit."""

    tensors: int  # the original's parameter and buffer tensors
    identical: int  # found unchanged in the model (under the same name, or with a wrapper's prefix)
    missing: int  # not found at all (another architecture)
    extra: int  # the model's tensors the original does not have (adapters)
    max_abs_change: float
    relative_change: float  # ||w - w_original|| / ||w_original|| over the matched floating tensors

    @property
    def all_identical(self) -> bool:
        return self.tensors > 0 and self.identical == self.tensors

    def as_dict(self) -> dict:
        return asdict(self) | {"all_identical": self.all_identical}


def _matching(name: str, state: dict[str, torch.Tensor], shape: torch.Size) -> str | None:
    """The model's tensor holding the original's `name`: itself, or under a wrapper's prefix (`base.`)."""
    for candidate in (name, *(k for k in state if k.endswith("." + name))):
        if candidate in state and state[candidate].shape == shape:
            return candidate
    return None


def weight_change(model: nn.Module, original: nn.Module) -> WeightChange:
    before = {k: v.detach().cpu() for k, v in original.state_dict().items()}
    after = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    identical = missing = 0
    used: set[str] = set()
    max_abs, squared_change, squared_norm = 0.0, 0.0, 0.0
    for name, tensor in before.items():
        match = _matching(name, after, tensor.shape)
        if match is None:
            missing += 1
            continue
        used.add(match)
        other = after[match]
        identical += int(torch.equal(tensor, other))
        if tensor.is_floating_point():
            difference = (other.double() - tensor.double())
            max_abs = max(max_abs, float(difference.abs().max()) if difference.numel() else 0.0)
            squared_change += float(difference.square().sum())
            squared_norm += float(tensor.double().square().sum())
    extra = sum(1 for k, v in after.items() if k not in used and v.is_floating_point())
    return WeightChange(tensors=len(before), identical=identical, missing=missing, extra=extra,
                        max_abs_change=max_abs,
                        relative_change=float(np.sqrt(squared_change / squared_norm)) if squared_norm else 0.0)


@dataclass
class ProbeResult:
    accuracy_f: float  # percent of the forget classes' test samples the probe labels correctly
    accuracy_f_ci: Interval
    accuracy_r: float  # percent on the retained classes' test samples: the probe works at all
    shots: int
    draws: int
    retained_samples: int
    feature_dim: int

    def as_dict(self) -> dict:
        return asdict(self)


def _stratified(labels: torch.Tensor, pool: torch.Tensor, limit: int, generator: torch.Generator) -> torch.Tensor:
    """At most `limit` indices of `pool`, the same share of each class."""
    picked = []
    for c in labels[pool].unique():
        members = pool[labels[pool] == c]
        take = max(1, round(limit * len(members) / len(pool))) if len(pool) > limit else len(members)
        picked.append(members[torch.randperm(len(members), generator=generator)[:take]])
    return torch.cat(picked)


def linear_probe(model: nn.Module, dataset: ImageDataset, forget: Sequence[int], *, shots: int = PROBE_SHOTS,
                 draws: int = PROBE_DRAWS, retained: int = PROBE_RETAINED, seed: int = 0) -> ProbeResult:
    """Fit a multinomial logistic regression on the penultimate features of retained-class training samples plus
    `shots` labelled training samples per forget class (balanced class weights: the attacker makes the most of
    the few), and score it on the whole test split; `draws` draws of the labelled forget samples, averaged."""
    generator = torch.Generator().manual_seed(seed)
    labels = dataset.train_labels
    is_forget = torch.isin(labels, torch.tensor(list(forget)))
    retained_rows = _stratified(labels, torch.nonzero(~is_forget).flatten(), retained, generator)
    forget_pools = [torch.nonzero(labels == c).flatten() for c in forget]
    if min(len(pool) for pool in forget_pools) < shots:
        raise ConfigError(f"the linear probe needs {shots} labelled training samples of each forget class and some "
                          "have fewer: lower the probe's shots (api.audit(..., probe={'shots': N}))")
    train_features = penultimate_features(model, dataset.train_images, dataset).numpy().astype(np.float64)
    test_features = penultimate_features(model, dataset.test_images, dataset).numpy().astype(np.float64)
    test_labels = dataset.test_labels.numpy()
    test_forget = np.isin(test_labels, list(forget))
    correct_f = np.zeros(int(test_forget.sum()))
    correct_r = 0.0
    for _ in range(draws):
        shot_rows = torch.cat([pool[torch.randperm(len(pool), generator=generator)[:shots]] for pool in forget_pools])
        rows = torch.cat([retained_rows, shot_rows]).numpy()
        scaler = StandardScaler().fit(train_features[rows])
        probe = LogisticRegression(max_iter=2000, class_weight="balanced")
        probe.fit(scaler.transform(train_features[rows]), labels.numpy()[rows])
        predicted = probe.predict(scaler.transform(test_features))
        correct_f += predicted[test_forget] == test_labels[test_forget]
        correct_r += float((predicted[~test_forget] == test_labels[~test_forget]).mean())
    per_sample = 100.0 * correct_f / draws
    return ProbeResult(accuracy_f=float(per_sample.mean()), accuracy_f_ci=bootstrap_mean(per_sample, seed=seed),
                       accuracy_r=100.0 * correct_r / draws, shots=shots, draws=draws,
                       retained_samples=len(retained_rows), feature_dim=int(train_features.shape[1]))
