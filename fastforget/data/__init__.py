"""Data: data sets in memory as uint8 tensors, class naming, forget/retain splits, and loaders (in-memory, FFCV).

FFCV is optional; `fastforget.data.ffcv` imports it only when a .beton file is written or read.
"""

from fastforget.data.classes import ForgetSplits, class_names, resolve_classes
from fastforget.data.ffcv import FFCVLoader, FFCVUnavailableError, ffcv_available, ffcv_loader, write_beton
from fastforget.data.loaders import Augment, BatchTransform, InMemoryLoader, epoch_order
from fastforget.data.sources import (
    DATASET_NAMES,
    ImageDataset,
    cache_dir,
    channel_stats,
    data_fingerprint,
    default_data_root,
    load_dataset,
)

__all__ = [
    "DATASET_NAMES",
    "Augment",
    "BatchTransform",
    "FFCVLoader",
    "FFCVUnavailableError",
    "ForgetSplits",
    "ImageDataset",
    "InMemoryLoader",
    "cache_dir",
    "channel_stats",
    "class_names",
    "data_fingerprint",
    "default_data_root",
    "epoch_order",
    "ffcv_available",
    "ffcv_loader",
    "load_dataset",
    "resolve_classes",
    "write_beton",
]
