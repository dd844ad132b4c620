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
    "ae_vs_vae",
    "classify",
    "compare",
    "complete",
    "disentanglement",
    "evaluate",
    "export",
    "gradvar",
    "interpolate",
    "latent_plot",
    "load",
    "open_run",
    "reconstruct",
    "report",
    "runs",
    "sample",
    "serve",
    "similar",
    "sweep",
    "train",
    "train_prior",
    "traverse",
]


def _api_function(name: str, module_name: str = "vaelab.api") -> property:
    """``vaelab.NAME`` is ``vaelab.api.NAME``, imported on first use: the API imports torch
    (a second or more), which ``vaelab --help`` must not pay for. No submodule shares an
    API function's name (tests/test_package.py), so nothing rebinds these; the setter
    ignores assignment all the same."""

    def get(module: types.ModuleType) -> object:
        import importlib  # deferred: the reason this property exists

        return getattr(importlib.import_module(module_name), name)

    return property(get, lambda module, value: None)


class _Package(types.ModuleType):
    # One function per CLI command (vaelab/cli), plus load and open_run.
    ae_vs_vae = _api_function("ae_vs_vae")
    classify = _api_function("classify")
    compare = _api_function("compare")
    complete = _api_function("complete")
    disentanglement = _api_function("disentanglement")
    evaluate = _api_function("evaluate")
    export = _api_function("export")
    gradvar = _api_function("gradvar")
    interpolate = _api_function("interpolate")
    latent_plot = _api_function("latent_plot")
    load = _api_function("load")
    open_run = _api_function("open_run")
    reconstruct = _api_function("reconstruct")
    report = _api_function("report")
    train_prior = _api_function("train_prior")
    runs = _api_function("runs")
    sample = _api_function("sample")
    serve = _api_function("serve", "vaelab.web")
    similar = _api_function("similar")
    sweep = _api_function("sweep")
    train = _api_function("train")
    traverse = _api_function("traverse")


sys.modules[__name__].__class__ = _Package
