"""vaelab: train, evaluate and explore variational autoencoders on images."""

import sys
import types

from vaelab.config import Config, DataConfig, ModelConfig, TrainConfig
from vaelab.errors import VaelabError
from vaelab.version import __version__

__all__ = [
    "Config",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "VaelabError",
    "__version__",
    "evaluate",
    "load",
    "serve",
    "train",
]


def _api_function(name: str, module_name: str = "vaelab.api") -> property:
    """``vaelab.NAME`` is ``vaelab.api.NAME``, imported on first use: the API imports torch
    (a second or more), which ``vaelab --help`` must not pay for. ``train`` is also the name
    of the training subpackage, and importing a submodule rebinds the parent's attribute;
    the setter ignores that, so ``vaelab.train`` stays the function."""

    def get(module: types.ModuleType) -> object:
        import importlib  # deferred: the reason this property exists

        return getattr(importlib.import_module(module_name), name)

    return property(get, lambda module, value: None)


class _Package(types.ModuleType):
    evaluate = _api_function("evaluate")
    load = _api_function("load")
    serve = _api_function("serve", "vaelab.web")
    train = _api_function("train")


sys.modules[__name__].__class__ = _Package
