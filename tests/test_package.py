"""The public API stays what the README says, however the package's modules are loaded."""

import importlib
import pkgutil

import vaelab
from vaelab.api import train as api_train


def test_every_module_imports_and_vaelab_train_stays_the_function():
    # vaelab.train is both a function (the API) and a subpackage (the loop): importing a
    # submodule for the first time rebinds the parent's attribute, so load them all and
    # check the function survives (vaelab/__init__ binds it after api.py has imported
    # the training modules).
    for info in pkgutil.walk_packages(vaelab.__path__, "vaelab."):
        if info.name != "vaelab.__main__":
            importlib.import_module(info.name)
    assert vaelab.train is api_train and callable(vaelab.train)
    assert {"train", "load", "evaluate", "Config", "VaelabError"} <= set(vaelab.__all__)
