"""Shadow and reference models for the strong membership attacks, trained once and cached.

U-LIRA needs N shadow originals (all data, different seeds) that the method under test then unlearns (the
caller replays it: this module knows no method), and N shadow retrained models (without the forget classes).
RMIA needs reference models trained on random halves of the training set. All of them go through `train_model`,
are cached under a key of the config's data/model/train tables, and are reused across methods and across runs: a
killed run resumes from the models it finished.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from fastforget.checkpoint import load_checkpoint
from fastforget.config import Config
from fastforget.data import ImageDataset
from fastforget.errors import CheckpointError
from fastforget.runtime import progress_enabled
from fastforget.train import train_model

SHADOW_SEED_BASE = 10_000
REPLAY_SEED_OFFSET = 10_000  # the method replayed on shadow i runs with its own seed, apart from every model's


def replay_seed(index: int) -> int:
    """The seed of the unlearning run replayed on shadow original `index`: never a shadow's or a target's seed,
    so that replaying `retrain` gives a retrained model of its own, not a copy of shadow retrained `index`."""
    return SHADOW_SEED_BASE + REPLAY_SEED_OFFSET + index


def recipe_key(cfg: Config) -> str:
    """A short hash of everything that changes how a model is trained."""
    blob = json.dumps({k: cfg.raw[k] for k in ("data", "model", "train")}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def half_split(num_samples: int, seed: int) -> torch.Tensor:
    """A boolean membership mask selecting a random half of the training set (reproducible from the seed)."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.zeros(num_samples, dtype=torch.bool)
    mask[torch.randperm(num_samples, generator=generator)[: num_samples // 2]] = True
    return mask


def reference_half(num_samples: int, index: int) -> torch.Tensor:
    """The training half of RMIA reference model `index`: models 2k and 2k+1 take the two complementary halves of
    one random split, so that from two references on every sample has an OUT model, which RMIA needs (independent
    halves leave a quarter of the samples inside both of two models)."""
    mask = half_split(num_samples, SHADOW_SEED_BASE + index // 2)
    return ~mask if index % 2 else mask


def cached_model(folder: Path, train: Callable[[Path], object], expect: dict) -> nn.Module:
    """The model cached in `folder` if its sidecar matches `expect`, else `train(folder)`'s (written there whole)."""
    if (folder / "model.json").is_file():
        try:
            model, meta = load_checkpoint(folder)
            if all(meta.get(k) == v for k, v in expect.items()):
                return model
        except CheckpointError:
            pass  # a corrupt cache entry is retrained below and overwritten atomically
    return train(folder).model.eval()


def _tag(kind: str, forget: Sequence[int]) -> str:
    if kind not in ("original", "retrained", "half"):
        raise ValueError(f"unknown shadow kind {kind!r}")
    return {"original": "original", "half": "half-paired",
            "retrained": "retrained-" + "-".join(map(str, sorted(forget)))}[kind]


def shadow_folder(cfg: Config, dataset: ImageDataset, *, kind: str, index: int, cache_dir: str | Path,
                  forget: Sequence[int] = ()) -> Path:
    """Where shadow model `index` of a kind is cached (what the audit's time estimate looks for)."""
    root = Path(cache_dir) / "shadows" / f"{dataset.name}-{recipe_key(cfg)}"
    return root / f"{_tag(kind, forget)}-s{SHADOW_SEED_BASE + index}"


def shadow_models(cfg: Config, dataset: ImageDataset, *, kind: str, count: int, cache_dir: str | Path,
                  forget: Sequence[int] = ()) -> list[nn.Module]:
    """`count` models of one kind: "original" (all data), "retrained" (without `forget`) or "half" (RMIA)."""
    tag = _tag(kind, forget)
    models = []
    for i in tqdm(range(count), desc=f"shadow {tag}", disable=not progress_enabled(), leave=False):
        seed = SHADOW_SEED_BASE + i
        folder = shadow_folder(cfg, dataset, kind=kind, index=i, cache_dir=cache_dir, forget=forget)
        indices = torch.nonzero(reference_half(len(dataset.train_labels), i)).flatten() if kind == "half" else None
        exclude = sorted(forget) if kind == "retrained" else []
        models.append(cached_model(
            folder,
            lambda out, s=seed, idx=indices, ex=exclude: train_model(
                cfg, exclude=ex, seed=s, dataset=dataset, train_indices=idx, out_dir=out, desc=f"shadow {tag}"),
            {"seed": seed, "excluded": exclude}))
    return models
