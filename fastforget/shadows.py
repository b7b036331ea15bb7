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
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from fastforget.checkpoint import SIDECAR, load_checkpoint
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

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class ShadowSpec:
    """One shadow or reference model: where it is cached and how it is trained."""

    folder: Path
    kind: str            # original, retrained or half
    index: int
    seed: int
    exclude: tuple[int, ...]

    def fits(self) -> bool:
        """The cached model's sidecar records this seed and exclusion (a model from elsewhere is retrained)."""
        try:
            meta = json.loads((self.folder / SIDECAR).read_text())
        except (OSError, ValueError):
            return False
        return meta.get("seed") == self.seed and meta.get("excluded") == list(self.exclude)


def shadow_specs(cfg: Config, dataset: ImageDataset, *, kind: str, count: int, cache_dir: str | Path,
                 forget: Sequence[int] = ()) -> list[ShadowSpec]:
    """The `count` models of one kind: "original" (all data), "retrained" (without `forget`) or "half" (RMIA)."""
    if kind not in ("original", "retrained", "half"):
        raise ValueError(f"unknown shadow kind {kind!r}")
    root = Path(cache_dir) / "shadows" / f"{dataset.name}-{recipe_key(cfg)}"
    tag = {"original": "original", "half": "half-paired",
           "retrained": "retrained-" + "-".join(map(str, sorted(forget)))}[kind]
    exclude = tuple(sorted(forget)) if kind == "retrained" else ()
    return [ShadowSpec(root / f"{tag}-s{SHADOW_SEED_BASE + i}", kind, i, SHADOW_SEED_BASE + i, exclude)
            for i in range(count)]


def train_shadow(spec: ShadowSpec, cfg: Config, dataset: ImageDataset) -> nn.Module:
    """Train one shadow model into its cache folder (written whole, so a kill leaves nothing half-written)."""
    log.info("training shadow model %s (cached for later runs; FASTFORGET_CACHE moves the cache)", spec.folder)
    indices = torch.nonzero(reference_half(len(dataset.train_labels), spec.index)).flatten() \
        if spec.kind == "half" else None
    return train_model(cfg, exclude=list(spec.exclude), seed=spec.seed, dataset=dataset, train_indices=indices,
                       out_dir=spec.folder, desc=f"shadow {spec.folder.name}").model.eval()


def load_cached(spec: ShadowSpec) -> nn.Module | None:
    """The cached model of `spec`, or None where it is missing, does not fit, or is corrupt (it is then retrained
    and overwritten atomically)."""
    if not spec.fits():
        return None
    try:
        model = load_checkpoint(spec.folder)[0]
    except CheckpointError:
        return None
    log.debug("model from the cache: %s", spec.folder)
    return model


def shadow_models(cfg: Config, dataset: ImageDataset, *, kind: str, count: int, cache_dir: str | Path,
                  forget: Sequence[int] = (), train_missing: bool = True) -> list[nn.Module]:
    """`count` models of one kind (see `shadow_specs`), from the cache, trained first where missing unless
    `train_missing` is off (the benchmark's cells: their models are trained by tasks of their own)."""
    models = []
    specs = shadow_specs(cfg, dataset, kind=kind, count=count, cache_dir=cache_dir, forget=forget)
    for spec in tqdm(specs, desc=f"shadow {kind}", disable=not progress_enabled(), leave=False):
        cached = load_cached(spec)
        if cached is not None:
            models.append(cached)
            continue
        if not train_missing:
            raise CheckpointError(f"shadow model {spec.folder} is missing or does not fit: its training task has "
                                  "not run or failed; rerun the benchmark to train it")
        models.append(train_shadow(spec, cfg, dataset))
    return models
