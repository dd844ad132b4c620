"""What ``--help`` shows without importing torch: registry names and config field docs.

Both are read from the source files (``ast`` and ``tokenize``), not by importing the
modules: the registries live beside the torch code they name, and importing that costs
seconds that ``vaelab --help`` must not spend. tests/test_cli_help.py checks every
name read here against the imported registry.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import tokenize
from functools import cache
from pathlib import Path


def _source(module: str) -> tuple[Path, str]:
    """The text of ``vaelab.X.Y``'s file, found without importing it or its parent packages
    (``importlib.util.find_spec`` would run ``vaelab/X/__init__.py``, which imports torch)."""
    root = Path(__file__).resolve().parent.parent  # the vaelab package
    parts = module.split(".")
    if parts[0] != "vaelab":
        raise AssertionError(f"{module} is not a vaelab module")
    base = root.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path, path.read_text(encoding="utf-8")
    raise AssertionError(f"no source file for {module}")


@cache
def registry_names(module: str, registry: str) -> tuple[str, ...]:
    """The keys of the dict literal assigned to ``registry`` at the top level of ``module``,
    in order, and of any later top-level ``REGISTRY["name"] = ...`` lines
    (``SAMPLERS: dict[...] = {"prior": ..., "gmm": ...}`` -> ``("prior", "gmm")``)."""
    path, text = _source(module)
    names: list[str] | None = None
    for node in ast.parse(text, str(path)).body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if isinstance(target, ast.Name) and target.id == registry:
            if not isinstance(node.value, ast.Dict):
                raise AssertionError(f"{module}.{registry} is not a dict literal of names")
            names = [k.value for k in node.value.keys if isinstance(k, ast.Constant)]
        elif (
            names is not None
            and isinstance(target, ast.Subscript)
            and isinstance(target.value, ast.Name)
            and target.value.id == registry
            and isinstance(target.slice, ast.Constant)
        ):
            names.append(target.slice.value)
    if names is None:
        raise AssertionError(f"{module} has no top-level {registry} = {{...}}")
    return tuple(names)


@cache
def field_comments(module: str) -> dict[str, str]:
    """``{field: comment}`` for each ``name: type = default  # comment`` line of the
    dataclasses in ``module`` (the config's own documentation of its fields). Comments on
    lines of their own, and fields without one, are left out."""
    _, text = _source(module)
    comments: dict[str, str] = {}
    line_tokens: list[tokenize.TokenInfo] = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type in (tokenize.NEWLINE, tokenize.NL):
            line_tokens = []
            continue
        if tok.type == tokenize.COMMENT and line_tokens:
            first, second = line_tokens[0], line_tokens[1] if len(line_tokens) > 1 else None
            if first.type == tokenize.NAME and second is not None and second.string == ":":
                comments[first.string] = tok.string.lstrip("#").strip()
            continue
        if tok.type not in (tokenize.INDENT, tokenize.DEDENT):
            line_tokens.append(tok)
    return comments


def field_help(cls: type) -> dict[str, str]:
    """The comment of each field of dataclass ``cls`` ('' where it has none)."""
    comments = field_comments(cls.__module__)
    return {f.name: comments.get(f.name, "") for f in dataclasses.fields(cls)}
