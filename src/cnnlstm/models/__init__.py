"""Registered models, one file per family. Importing this package registers all of them."""

from cnnlstm.models._registry import create_model, get_model_class, list_models, model_config, register_model

__all__ = ["create_model", "get_model_class", "list_models", "model_config", "register_model"]

# Model families register themselves on import. Each import is added here when its file lands.
