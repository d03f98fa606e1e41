"""cnnlstm: models that join a convolutional network and an LSTM, and the tools to train, search and ship them."""

from cnnlstm.errors import CnnLstmError, ConfigError, DataError, ShapeError, UnknownNameError, WeightsError
from cnnlstm.models import create_model, list_models, register_model

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "create_model",
    "list_models",
    "register_model",
    "CnnLstmError",
    "ConfigError",
    "DataError",
    "ShapeError",
    "UnknownNameError",
    "WeightsError",
]
