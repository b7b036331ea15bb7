"""Data: data sets in memory as uint8 tensors, class naming, forget/retain splits, loaders (in-memory, FFCV) and the
config-to-loader wiring (`make_train_loader`).

FFCV is optional; `fastforget.data.ffcv` imports it only when a .beton file is written or read.
"""

from fastforget.data.classes import ForgetSplits, class_names, resolve_classes
from fastforget.data.factory import config_augment, ffcv_folder, ffcv_train_file, make_train_loader
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
    "config_augment",
    "data_fingerprint",
    "default_data_root",
    "epoch_order",
    "ffcv_available",
    "ffcv_folder",
    "ffcv_loader",
    "ffcv_train_file",
    "load_dataset",
    "make_train_loader",
    "resolve_classes",
    "write_beton",
]
