"""vaelab: train, evaluate and explore variational autoencoders on images."""

from vaelab.api import evaluate, load, train
from vaelab.config import Config, DataConfig, ModelConfig, TrainConfig
from vaelab.errors import VaelabError
from vaelab.serve import serve  # after api: vaelab.serve is the function, not the package

__all__ = [
    "Config",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "VaelabError",
    "evaluate",
    "load",
    "serve",
    "train",
]
__version__ = "0.1.0"
