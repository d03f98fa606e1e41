"""Datasets: loaders for user data (UCR/UEA, .ts, .npz, frame folders, sensor streams) and generated sets."""

from cnnlstm.data._registry import DatasetBundle, list_datasets, load_dataset, register_dataset, register_source

__all__ = ["DatasetBundle", "list_datasets", "load_dataset", "register_dataset", "register_source"]
