"""Registered models, one file per family. Importing this package registers all of them.

Every module in this package whose name does not start with ``_`` is imported here, so a new model
family only needs its own file.
"""

import importlib
import pkgutil

from cnnlstm.models._registry import create_model, get_model_class, list_models, model_config, register_model

__all__ = ["create_model", "get_model_class", "list_models", "model_config", "register_model"]

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
