"""The CLI is generated from one table (vaelab/cli/table.py): each command is the API
function of the same name, the common options are declared once, the run is opened once,
and every file a command writes is refused when it exists (unless --overwrite)."""

from __future__ import annotations

import ast
import importlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import vaelab
from vaelab.cli import build_parser, main
from vaelab.cli.table import COMMANDS, COMMON
from vaelab.errors import VaelabError

CLI = Path(importlib.import_module("vaelab.cli").__file__).parent


def test_every_command_in_the_table_is_the_api_function_of_the_same_name():
    renamed = {"runs": "runs_table"}  # vaelab.runs is the module of the Run record
    for name, cmd in COMMANDS.items():
        module, function = cmd.function
        assert function == renamed.get(name, name.replace("-", "_")), name
        assert getattr(importlib.import_module(module), function) is getattr(vaelab, function)


def test_common_options_are_declared_once_in_the_cli_source():
    # Every flag string written in the CLI's source: the common ones appear exactly once
    # (in COMMON), so no command re-declares --device, --seed, --out, --overwrite or --json.
    declared: list[str] = []  # first arguments of opt(...) and add_argument(...) calls
    for path in CLI.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            name = getattr(getattr(node, "func", None), "id", None) or getattr(
                getattr(node, "func", None), "attr", None
            )
            if isinstance(node, ast.Call) and name in ("opt", "add_argument") and node.args:
                declared += [a.value for a in node.args if isinstance(a, ast.Constant)]
    common = ["--device", "--json", "--out", "--overwrite", "--seed"]
    assert sorted(f for f in declared if f in common) == common
    assert len(declared) > 50  # the walk saw the table's options (guards against a miss)
    # ... and each command that takes one gets it exactly once, with the table's meaning.
    (action,) = [a for a in build_parser()._actions if hasattr(a, "choices") and a.choices]
    for name, parser in action.choices.items():
        strings = [s for a in parser._actions for s in a.option_strings]
        assert len(strings) == len(set(strings)), name
        for key in COMMANDS[name].common:
            if key != "run":
                assert COMMON[key].flags[0] in strings, (name, key)


def test_a_model_carries_nothing_of_its_run(digits_run):
    model = vaelab.load(digits_run)
    for attribute in ("config", "run_info", "run_dir"):
        assert not hasattr(model, attribute), attribute
    run = vaelab.open_run(digits_run)
    assert run.config.data.dataset == "digits" and run.folder == digits_run
    # What needs the run's config says so in one line; what needs the model alone works.
    with pytest.raises(VaelabError, match=r"pass the run folder or vaelab\.open_run"):
        vaelab.evaluate(model, samples=2, limit=4)
    # The prior's samples need only the model: the same draws as through the run's sampler.
    torch.testing.assert_close(vaelab.sample(model, 4, seed=3), vaelab.sample(run, 4, seed=3))
    x = torch.rand(2, 1, 8, 8)
    images = vaelab.complete(model, x, "left-half", n=2, steps=1)
    assert images.shape == (2, 2, 1, 8, 8)
    torch.testing.assert_close(
        images[:, :, :, :, 4:], x[:, None, :, :, 4:].expand_as(images[..., 4:])
    )


def test_the_run_is_opened_once_for_a_repeated_command(digits_run, tmp_path, monkeypatch):
    api = importlib.import_module("vaelab.api")
    opened = []  # reads of a run folder from disk (open_run passes a Run through)
    real = api.read_run
    monkeypatch.setattr(api, "read_run", lambda *a: opened.append(a) or real(*a))
    run = shutil.copytree(digits_run, tmp_path / "run")  # the shared run's outputs/ stay empty
    assert main(["traverse", str(run), "--index", "0", "1", "--dims", "2"]) == 0
    assert len(opened) == 1
    assert (run / "outputs" / "traverse-0.png").is_file()


def test_sample_npy_is_not_replaced_without_overwrite(digits_run, tmp_path, capsys):
    # Before the table, `sample --npy` wrote over an existing file silently.
    npy = tmp_path / "images.npy"
    np.save(npy, np.zeros(3))
    before = sorted(digits_run.rglob("*"))
    assert main(["sample", str(digits_run), "-n", "4", "--npy", str(npy)]) == 2
    err = capsys.readouterr().err
    assert f"--npy {npy}: exists; pass --overwrite" in err and len(err.splitlines()) == 1
    assert np.load(npy).shape == (3,) and sorted(digits_run.rglob("*")) == before
    out = tmp_path / "grid.png"
    assert main(["sample", str(digits_run), "-n", "4", "--npy", str(npy), "--out", str(out),
                 "--overwrite"]) == 0  # fmt: skip
    images = np.load(npy)
    assert images.shape == (4, 1, 8, 8) and images.min() >= 0 and images.max() <= 1


def test_complete_json_is_not_replaced_without_overwrite(digits_run, tmp_path, capsys):
    # Before the table, `complete --json` wrote over an existing file silently.
    path = tmp_path / "scores.json"
    path.write_text("{}")
    args = ["complete", str(digits_run), "--mask-preset", "left-half", "--evaluate", "4",
            "--steps", "1", "-n", "1", "--json", str(path)]  # fmt: skip
    assert main(args) == 2
    assert "--json" in capsys.readouterr().err and path.read_text() == "{}"
    assert main([*args, "--overwrite"]) == 0
    assert '"missing_fraction": 0.5' in path.read_text()
