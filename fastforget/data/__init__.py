"""Data: data sets in memory as uint8 tensors (or image folders left on disk), class naming, forget/retain splits,
loaders (in-memory, FFCV, streamed) and the config-to-loader wiring (`make_train_loader`, `ordered_loader`).

FFCV is optional; `fastforget.data.ffcv` imports it only when a .beton file is written or read.
"""

from fastforget.data.classes import ForgetSplits, class_names, resolve_classes
from fastforget.data.factory import (
    config_augment,
    config_dataset,
    dataset_options,
    ffcv_folder,
    ffcv_train_file,
    make_train_loader,
    ordered_loader,
)
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
from fastforget.data.stream import StreamedImages, StreamLoader

__all__ = [
    "DATASET_NAMES",
    "Augment",
    "BatchTransform",
    "FFCVLoader",
    "FFCVUnavailableError",
    "ForgetSplits",
    "ImageDataset",
    "InMemoryLoader",
    "StreamLoader",
    "StreamedImages",
    "cache_dir",
    "channel_stats",
    "class_names",
    "config_augment",
    "config_dataset",
    "data_fingerprint",
    "dataset_options",
    "default_data_root",
    "epoch_order",
    "ffcv_available",
    "ffcv_folder",
    "ffcv_loader",
    "ffcv_train_file",
    "load_dataset",
    "make_train_loader",
    "ordered_loader",
    "resolve_classes",
    "write_beton",
]
