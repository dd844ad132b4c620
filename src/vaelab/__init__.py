"""vaelab: train, evaluate and explore variational autoencoders on images."""

from vaelab.api import evaluate, load, train
from vaelab.config import Config, DataConfig, ModelConfig, TrainConfig
from vaelab.errors import VaelabError

__all__ = [
    "Config",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "VaelabError",
    "evaluate",
    "load",
    "train",
]
__version__ = "0.1.0"
