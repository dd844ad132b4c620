"""The public API stays what the README says, however the package's modules are loaded."""

import importlib
import inspect
import pkgutil

import vaelab
from vaelab.api import train as api_train


def api_functions() -> set[str]:
    return {n for n in vaelab.__all__ if inspect.isfunction(getattr(vaelab, n))}


def test_every_module_imports_and_vaelab_train_stays_the_function():
    # Importing a submodule for the first time binds it on the parent package; load them
    # all and check every API name is still its function.
    for info in pkgutil.walk_packages(vaelab.__path__, "vaelab."):
        if info.name != "vaelab.__main__":
            importlib.import_module(info.name)
    assert vaelab.train is api_train and callable(vaelab.train)
    assert {"train", "load", "evaluate", "Config", "VaelabError"} <= set(vaelab.__all__)
    assert {"train", "evaluate", "classify", "complete", "gradvar", "report"} <= api_functions()


def test_no_module_is_named_like_an_api_function():
    # Issue 13: `vaelab.train` was both the function and the training package, so
    # `import vaelab.train.loop as m` failed and monkeypatching vaelab.train.loop.fit did too.
    modules = {info.name for info in pkgutil.iter_modules(vaelab.__path__)}
    assert not modules & api_functions(), sorted(modules & api_functions())
    loop = importlib.import_module("vaelab.training.loop")
    import vaelab.training.loop as m  # the form that failed

    assert m is loop and m.fit is not vaelab.train
