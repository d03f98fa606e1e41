"""Datasets: loaders for user data (UCR/UEA, .ts, .npz, frame folders, sensor streams) and generated sets.

Load any of them with ``load_dataset("prefix:argument", seed=..., **options)``; ``list_datasets()`` lists the
sources and built-in sets. Validation is carved from training with :func:`split_train_val`.
"""

from cnnlstm.data._registry import (
    DatasetBundle,
    list_datasets,
    load_dataset,
    register_dataset,
    register_source,
    register_writer,
    write_dataset,
)
from cnnlstm.data.collate import pad_collate
from cnnlstm.data.frames import FramesDataset, sample_frame_indices
from cnnlstm.data.info import DataInfo
from cnnlstm.data.series import bundled_ucr_names, read_ts
from cnnlstm.data.series_dataset import SeriesDataset
from cnnlstm.data.splits import grouped_split, split_train_val, stratified_split
from cnnlstm.data.windows import sliding_windows

__all__ = [
    "DataInfo",
    "DatasetBundle",
    "FramesDataset",
    "SeriesDataset",
    "bundled_ucr_names",
    "list_datasets",
    "load_dataset",
    "pad_collate",
    "read_ts",
    "register_dataset",
    "register_source",
    "register_writer",
    "write_dataset",
    "sample_frame_indices",
    "sliding_windows",
    "grouped_split",
    "split_train_val",
    "stratified_split",
]
