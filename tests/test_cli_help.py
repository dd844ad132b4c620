"""--help answers at once (no torch), documents every option, and lists real choices."""

import argparse
import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from vaelab.cli import COMMANDS, build_parser
from vaelab.cli.names import field_comments, option_sections, registry_map, registry_names
from vaelab.cli.train import SUGGESTED, choices
from vaelab.config import SECTIONS, Config

HEAVY = ("torch", "numpy", "matplotlib", "PIL", "scipy", "sklearn", "safetensors")
CLI = Path(importlib.import_module("vaelab.cli").__file__).parent


def test_help_of_every_command_imports_no_heavy_module():
    # One fresh interpreter runs `vaelab --help` and every `vaelab CMD --help` and records
    # which heavy modules each has loaded: a count of sys.modules, not a timing, so the
    # result does not depend on how busy the machine is.
    script = (
        "import json, sys\n"
        "from vaelab.cli import COMMANDS, main\n"
        "seen = {}\n"
        "for cmd in [None, *COMMANDS]:\n"
        "    try:\n"
        "        main([cmd, '--help'] if cmd else ['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"    seen[cmd or '--help'] = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "sys.stderr.write(json.dumps(seen))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    seen = json.loads(proc.stderr)
    assert set(seen) == {"--help", *COMMANDS}
    assert {cmd: mods for cmd, mods in seen.items() if mods} == {}
    assert "train" in proc.stdout and "complete" in proc.stdout


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_option_of_every_command_has_help_and_its_default_once():
    for name, parser in _subparsers().items():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            flag = "/".join(action.option_strings) or action.dest
            assert action.help, f"vaelab {name} {flag} has no help"
            text = formatter._get_help_string(action)
            assert text.count("(default") <= 1, f"vaelab {name} {flag}: {text!r}"
            # `is`, not `in`: 0 == False, and a default of 0 (--seed) must show too
            shown = action.default is not None and action.default is not False
            if shown and action.option_strings and action.nargs != 0:
                assert "(default" in text, f"vaelab {name} {flag} hides its default"


def test_train_help_shows_each_fields_comment_choices_and_default(monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping (argparse breaks lines at hyphens)
    text = _subparsers()["train"].format_help()
    flat = " ".join(text.split())  # argparse wraps lines
    # The registries imported for real: the names --help reads from the source must be
    # exactly what the code accepts.
    from vaelab.latents import FAMILIES
    from vaelab.latents.priors import PRIORS
    from vaelab.likelihoods import LIKELIHOODS
    from vaelab.models import MODELS

    for field, registry in (
        ("model", MODELS), ("likelihood", LIKELIHOODS), ("prior", PRIORS),
        ("posterior", FAMILIES),
    ):  # fmt: skip
        assert choices(field) == tuple(registry)
        assert ", ".join(registry) in flat, field
    assert "--schedule NAME learning-rate schedule" in flat
    assert "one of: none, cosine, step (default: none)" in flat
    assert "--latent-dim INT size of the latent code z (default: 20)" in flat
    for section in SECTIONS.values():
        for field in section.__dataclass_fields__:
            if field != "options":  # not a flag: its dataclass's fields are (below)
                assert f"--{field.replace('_', '-')} " in text
    for _, fields in option_sections().values():
        for f in fields:
            assert f"--{f.name.replace('_', '-')} " in text
    # Each family's own options are grouped under it, after the core ones.
    hvae = text.index("options of --model hvae only")
    assert text.index("--z1-dim ", hvae) > hvae > text.index("  --free-bits")
    assert "options of --model cvae, --model m2 only" in text
    assert flat.count("(default: vae)") == 1
    assert "VALUE" not in text  # every field shows its type (INT, FLOAT, INT,..., NAME)


def test_every_registry_read_from_source_matches_the_imported_one():
    calls = {*registry_map().values(), *SUGGESTED.values()}
    for path in CLI.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", "") == "registry_names"
                and all(isinstance(a, ast.Constant) for a in node.args)
            ):
                calls.add(tuple(a.value for a in node.args))
    assert len(calls) >= 12  # every registry the CLI names (guards against a parse miss)
    for module, name in sorted(calls):
        assert registry_names(module, name) == tuple(getattr(importlib.import_module(module), name))


def test_field_comments_reads_trailing_comments_only(tmp_path, monkeypatch):
    source = (
        "from dataclasses import dataclass\n"
        "@dataclass\n"
        "class C:\n"
        "    # a comment on its own line documents nothing\n"
        '    name: str = "a # not a comment"  # the name (may hold #)\n'
        "    widths: tuple[int, ...] = (1, 2)  # widths, comma-separated\n"
        "    bare: int = 3\n"
        "    optional: float | None = None  # None: off\n"
        "x = 1  # not a field\n"
    )
    package = tmp_path / "vaelab"
    package.mkdir()
    (package / "fake_config.py").write_text(source)
    monkeypatch.setattr("vaelab.cli.names.__file__", str(package / "cli" / "names.py"))
    field_comments.cache_clear()
    try:
        assert field_comments("vaelab.fake_config") == {
            "name": "the name (may hold #)",
            "widths": "widths, comma-separated",
            "optional": "None: off",
        }
    finally:
        field_comments.cache_clear()


def test_config_fields_are_all_documented():
    comments = field_comments("vaelab.config")
    missing = [
        f for section in SECTIONS.values() for f in section.__dataclass_fields__
        if not comments.get(f)
    ]  # fmt: skip
    assert missing == [] and Config() is not None


@pytest.mark.parametrize("registry", [("vaelab.evaluation.completion", "NOPE")])
def test_registry_names_refuses_what_it_cannot_read(registry):
    with pytest.raises(AssertionError):
        registry_names(*registry)


def test_the_registry_map_read_from_source_is_the_one_training_checks():
    from vaelab.training.options import REGISTRIES

    assert set(registry_map()) == set(REGISTRIES)
    for field, (module, name) in registry_map().items():
        assert getattr(importlib.import_module(module), name) is REGISTRIES[field], field


def test_option_sections_read_from_source_are_the_ones_the_config_uses():
    # --help reads each family's/objective's options dataclass from the source; the config
    # uses the imported classes: the same fields, types, defaults and comments.
    import dataclasses
    import typing

    import vaelab.objectives  # noqa: F401  (registers the objectives' sections)
    from vaelab.config import option_sections as imported

    live = imported()
    read = option_sections()
    assert set(read) == set(live) and {"hvae", "deep", "cvae", "m2"} <= set(read)
    for section, (selector, fields) in read.items():
        owner, cls = live[section]
        assert selector == owner.selector
        hints = typing.get_type_hints(cls)
        want = [(f.name, hints[f.name], f.default) for f in dataclasses.fields(cls)]
        assert [(f.name, f.type, f.default) for f in fields] == want, section
        assert all(f.comment for f in fields), section
