"""Every default the command table gives an option is the default of the API function's
keyword it feeds (``vaelab sample -n`` and ``vaelab.sample(n=)`` draw the same number of
images): the two are written in two places, and this test ties them."""

import importlib
import inspect

from vaelab.cli import _options
from vaelab.cli.table import COMMANDS

# Deliberate differences, each with its reason.
EXEMPT = {
    # Python draws fresh z unless seeded (two evaluations pair images, not draws:
    # test_nll); the command seeds 0 so that its printed figures repeat.
    ("evaluate", "seed"),
}


def test_each_table_default_is_the_api_functions_default():
    checked, differ = 0, []
    for name, cmd in COMMANDS.items():
        module, function_name = cmd.function
        function = getattr(importlib.import_module(module), function_name)
        params = inspect.signature(function).parameters
        for option in _options(cmd):
            if option.default is None or option.name not in params or option.name == cmd.each:
                continue
            if (name, option.name) in EXEMPT:
                continue
            want = params[option.name].default
            if want is inspect.Parameter.empty:
                continue
            got = option.convert(option.default) if option.convert else option.default
            checked += 1
            if got != want and not (isinstance(want, tuple) and tuple(got) == want):
                differ.append(f"vaelab {name} {option.flags[0]}: table {got!r}, api {want!r}")
    assert differ == []
    assert checked >= 25  # the table's defaults (guards against a parse miss)
