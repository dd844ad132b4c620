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
def _tree(module: str) -> ast.Module:
    """The parsed source of ``vaelab.X.Y`` (not imported)."""
    path, text = _source(module)
    return ast.parse(text, str(path))


@cache
def registry_names(module: str, registry: str) -> tuple[str, ...]:
    """The keys of the dict literal assigned to ``registry`` at the top level of ``module``,
    in order, and of any later top-level ``REGISTRY["name"] = ...`` lines
    (``SAMPLERS: dict[...] = {"prior": ..., "gmm": ...}`` -> ``("prior", "gmm")``)."""
    return tuple(_dict_literal(_tree(module), registry, module))


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


def _imports(tree: ast.Module, module: str) -> dict[str, str]:
    """``{name: module it is imported from}`` for the ``from X import name`` lines of a file."""
    out: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                out[alias.asname or alias.name] = node.module
    return out


def _dict_literal(tree: ast.Module, name: str, module: str) -> dict[str, ast.expr]:
    """The ``{key: value-expression}`` of the top-level dict literal ``name`` (plus later
    ``NAME["key"] = value`` lines)."""
    out: dict[str, ast.expr] | None = None
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if isinstance(target, ast.Name) and target.id == name:
            if not isinstance(node.value, ast.Dict):
                raise AssertionError(f"{module}.{name} is not a dict literal of names")
            out = {k.value: v for k, v in zip(node.value.keys, node.value.values, strict=True)
                   if isinstance(k, ast.Constant)}  # fmt: skip
        elif (out is not None and isinstance(target, ast.Subscript)
              and isinstance(target.value, ast.Name) and target.value.id == name
              and isinstance(target.slice, ast.Constant)):  # fmt: skip
            out[target.slice.value] = node.value
    if out is None:
        raise AssertionError(f"{module} has no top-level {name} = {{...}}")
    return out


@cache
def registry_map() -> dict[str, tuple[str, str]]:
    """Config field -> (module, registry) of :data:`vaelab.training.options.REGISTRIES`, the
    one map of registries, read from its source (each value a registry imported by name)."""
    module = "vaelab.training.options"
    tree = _tree(module)
    imports = _imports(tree, module)
    out = {}
    for field, value in _dict_literal(tree, "REGISTRIES", module).items():
        if not isinstance(value, ast.Name) or value.id not in imports:
            raise AssertionError(f"{module}.REGISTRIES[{field!r}] is not an imported registry")
        out[field] = (imports[value.id], value.id)
    return out


@dataclasses.dataclass(frozen=True)
class OptionField:
    """One field of a family's or objective's options dataclass, as --help shows it."""

    name: str
    type: object  # the annotation evaluated: int, float, str, bool, tuple[int, ...], X | None
    default: object
    comment: str


_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "tuple": tuple, "None": None}


def _class_fields(module: str, cls_name: str) -> list[OptionField]:
    """The annotated fields of dataclass ``cls_name`` in ``module``, read from the source."""
    (cls,) = [n for n in _tree(module).body if isinstance(n, ast.ClassDef) and n.name == cls_name]
    comments = field_comments(module)
    out = []
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            tp = eval(ast.unparse(node.annotation), {"__builtins__": {}}, dict(_TYPES))
            default = ast.literal_eval(node.value) if node.value is not None else None
            out.append(OptionField(node.target.id, tp, default, comments.get(node.target.id, "")))
    return out


def _class_attribute(module: str, cls_name: str, attribute: str) -> str | None:
    """The name assigned to ``attribute`` in class ``cls_name``'s body (None: not there)."""
    for node in _tree(module).body:
        if isinstance(node, ast.ClassDef) and node.name == cls_name:
            for item in node.body:
                if (isinstance(item, ast.Assign) and len(item.targets) == 1
                        and isinstance(item.targets[0], ast.Name)
                        and item.targets[0].id == attribute
                        and isinstance(item.value, ast.Name)):  # fmt: skip
                    return item.value.id
    return None


@cache
def option_sections() -> dict[str, tuple[str, list[OptionField]]]:
    """Section name -> (its selector flag, ``model`` or ``objective``; its fields), read from
    the source: each model family's ``options = SomeOptions`` class attribute (the class in
    the family's module) and :data:`vaelab.objectives.OBJECTIVE_OPTIONS`. What
    :func:`vaelab.config.option_sections` gives at run time, without importing torch."""
    out: dict[str, tuple[str, list[OptionField]]] = {}
    module = "vaelab.models"
    tree = _tree(module)
    imports = _imports(tree, module)
    for name, value in _dict_literal(tree, "MODELS", module).items():
        if isinstance(value, ast.Name) and value.id in imports:
            where = imports[value.id]
            options = _class_attribute(where, value.id, "options")
            if options is not None:
                out[name] = ("model", _class_fields(where, options))
    module = "vaelab.objectives"
    tree = _tree(module)
    imports = _imports(tree, module)  # an objective's options may live in its own module
    for name, value in _dict_literal(tree, "OBJECTIVE_OPTIONS", module).items():
        if isinstance(value, ast.Name):
            where = imports.get(value.id, module)
            out[name] = ("objective", _class_fields(where, value.id))
    return out
