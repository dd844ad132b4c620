"""Typed, frozen configuration: defaults < config file < command-line flags.

A run is described by one :class:`Config` of three core sections (data, model, train)
holding what every run has, plus the options of the model family and of the objective it
uses: each family or objective that has options of its own declares them as a small frozen
dataclass (``HVAE.options = HVAEOptions``; :data:`vaelab.objectives.OBJECTIVE_OPTIONS`),
held in ``ModelConfig.options`` / ``TrainConfig.options`` and written to config.yaml as a
section named after it (``hvae: {z1_dim: 64, z1_hidden: [128]}``). This module cannot import
the registries (they sit above it), so they register themselves in :data:`OWNERS`.

Every field has a unique name across the core sections, so the command line exposes each as
``--field-name`` (underscores become dashes), and so do the options' fields; a file may use
the nested form ``{model: {latent_dim: 20}, hvae: {z1_dim: 8}}`` or the flat form
``{latent_dim: 20, z1_dim: 8}``. Unknown keys are errors, never ignored; an option of a
family or objective the run does not use is refused naming who takes it; values are
checked against the type.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import tomllib
import yaml

from vaelab.errors import VaelabError, all_at_least, at_least, positive, unknown_name


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "fashion-mnist"  # builtin name or a path (IDX, .npz, image folder)
    resize: str | None = None  # "HxW" or "S"; required when folder images differ in size
    channels: int | None = None  # force 1 (grayscale) or 3 (RGB)
    test_fraction: float = 0.1  # held-out share when the data has no test split of its own
    binarize: str = "none"  # 0/1 draws from the grey levels: once (static) or each step (dynamic)
    background: str = "white"  # white | black | R,G,B: what transparent pixels are laid on
    center_crop: str | None = None  # "square" or "HxW": keep the image centre, before --resize


@dataclass(frozen=True)
class ModelConfig:
    model: str = "vae"  # AE, VAE, 2-level, conditional, M2, deep; flow, sphere, categorical; VQ-VAE
    arch: str = "mlp"  # encoder/decoder bodies: fully connected, strided or residual convs
    hidden: tuple[int, ...] | None = None  # widths; default mlp 400, conv 32,64, resnet 32,64,128
    blocks: int = 2  # resnet: residual blocks at each resolution (one width of --hidden each)
    latent_dim: int = 20  # size of the latent code z
    likelihood: str = "bernoulli"  # p(x|z) of each pixel (bernoulli: binary or grey in [0, 1])
    sigma: float = 1.0  # std of gaussian-fixed; initial std of the learned ones
    mixtures: int = 10  # dmol: logistic components per pixel (PixelCNN++ used 10)
    prior: str = "normal"  # p(z); the default normal follows a gamma or beta posterior
    prior_components: int = 10  # mixture components / VampPrior pseudo-inputs
    posterior: str = "normal"  # family of q(z|x)
    prior_a: float = 1.0  # Gamma(a, b) shape / Beta(a, b) first parameter
    prior_b: float = 1.0  # Gamma(a, b) rate / Beta(a, b) second parameter
    estimator: str = "reparam"  # gradient estimator through the draw of z
    baseline_decay: float = 0.9  # score-baseline: EMA decay of the running mean of f
    learned_baseline: bool = False  # score-baseline: add a learned input-dependent b(x)
    # The model family's own options (its ``options`` dataclass; None: it has none), stored
    # as the section named after the family in config.yaml. Not a flag itself: its fields are.
    options: Any = None  # the family's options dataclass (its fields are the flags)


@dataclass(frozen=True)
class TrainConfig:
    objective: str | None = None  # bound maximised (default: m2 for --model m2, else elbo)
    samples: int = 1  # K Monte Carlo / importance samples per image
    beta: float = 1.0  # KL weight of the ELBO
    warmup_epochs: float = 0.0  # beta rises linearly from 0 over this many epochs
    epochs: int = 10  # passes over the training set
    batch_size: int = 128  # images per step
    lr: float = 1e-3  # Adam learning rate
    weight_decay: float = 0.0  # Adam weight decay (L2 penalty)
    schedule: str = "none"  # learning-rate schedule: cosine decay, or step (x0.5 every third)
    clip_grad: float | None = None  # max global gradient norm
    max_bad_steps: int = 20  # consecutive non-finite steps before training stops
    checkpoint_every: int = 0  # steps between mid-epoch checkpoints (0: each epoch only)
    eval_samples: int = 1  # K for the per-epoch test-set bound
    seed: int = 0  # seed of the initial weights, batch order and draws
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "fp32"  # autocast precision on CUDA (CPU trains in fp32)
    compile: bool = False  # torch.compile the training step (declined on CPU for conv bodies)
    progress: bool = True  # tqdm bar with live loss
    report: bool = True  # curves every <=30 s; pictures + report.html at the end
    ema: float | None = None  # weight-average decay for eval/sampling (None: .999 deep, else off)
    skip_threshold: float | None = None  # skip steps whose gradient norm exceeds this (VDVAE)
    free_bits: float = 0.0  # elbo: floor (nats) on each latent group's batch-mean KL
    deterministic: bool = False  # deterministic CUDA kernels: bit-exact GPU reruns, slower
    track: tuple[str, ...] = ()  # experiment trackers, comma-separated (vaelab[NAME] extras)
    track_every: int = 50  # steps between the trackers' per-step scalars (0: per epoch only)
    # The objective's own options (OBJECTIVE_OPTIONS' dataclass; None: it has none), stored
    # as the section named after the objective in config.yaml.
    options: Any = None  # the objective's options dataclass (its fields are the flags)


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain-Python form (tuples become lists), for YAML/JSON: the three core
        sections, then the model family's and the objective's options each as a section
        named after it (``hvae: {z1_dim: 64, z1_hidden: [128]}``)."""
        out: dict[str, dict[str, Any]] = {}
        extra: dict[str, dict[str, Any]] = {}
        for name in SECTIONS:
            section = dataclasses.asdict(getattr(self, name))
            options = section.pop("options", None)
            out[name] = section
            if options is not None:
                extra[active_entry(self, OWNERS[name])] = options
        return json.loads(json.dumps({**out, **extra}))


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


@dataclass(frozen=True)
class OptionOwner:
    """A registry above this module whose entries may own options: the model families
    (``ModelConfig.options``, chosen by ``--model``) and the objectives (``TrainConfig.options``,
    chosen by ``--objective``). ``entries()`` reads the registry when called, so an entry
    added at run time brings its options with it."""

    section: str  # the core section whose ``options`` field holds the active entry's options
    selector: str  # the field of that section naming the active entry
    entries: Callable[[], Mapping[str, type | None]]  # entry name -> its options dataclass


# Filled by vaelab.models and vaelab.objectives when they are imported (every program that
# builds or trains a model has imported them): the config layer cannot import upward.
OWNERS: dict[str, OptionOwner] = {}


# Defaults that follow from another option. Each body has its own widths: the MLP's 400
# units as one conv layer would be 400 channels and a 78,400-wide linear layer (4.8 M
# parameters on 28x28); 32,64 is the shipped conv config (configs/fashion_conv.yaml).
ARCH_WIDTHS: dict[str, tuple[int, ...]] = {"mlp": (400,), "conv": (32, 64), "resnet": (32, 64, 128)}
# The objective a model trains with unless told otherwise (M2 accepts only its own).
MODEL_OBJECTIVE: dict[str, str] = {"m2": "m2"}
MODEL_OBJECTIVE["vqvae"] = "vq"  # reconstruction + commitment (objectives/vq.py)
DEFAULT_OBJECTIVE = "elbo"


def resolve_model(cfg: ModelConfig) -> ModelConfig:
    """``cfg`` with ``hidden=None`` replaced by the arch's widths (unknown arch: unchanged,
    left to the registry's error)."""
    if cfg.hidden is None and cfg.arch in ARCH_WIDTHS:
        return replace(cfg, hidden=ARCH_WIDTHS[cfg.arch])
    return cfg


def default_objective(model: str) -> str:
    """The objective ``--model model`` trains with unless told otherwise."""
    return MODEL_OBJECTIVE.get(model, DEFAULT_OBJECTIVE)


def active_entry(config: Config, owner: OptionOwner) -> str:
    """The registry entry whose options ``owner``'s section holds (the objective resolved)."""
    value = getattr(getattr(config, owner.section), owner.selector)
    if value is None and owner.selector == "objective":
        return default_objective(config.model.model)
    return value


def option_sections() -> dict[str, tuple[OptionOwner, type]]:
    """Section name (the entry's registry name) -> (its owner, its options dataclass), for
    every registered entry that has options."""
    out: dict[str, tuple[OptionOwner, type]] = {}
    for owner in OWNERS.values():
        for name, cls in owner.entries().items():
            if cls is None:
                continue
            if name in out or name in SECTIONS:
                raise AssertionError(f"option section {name!r} is declared twice")
            out[name] = (owner, cls)
    return out


def option_fields() -> dict[str, list[str]]:
    """Option field name -> the sections (entries) that declare it. A name may be declared
    by several (``num_classes``: cvae and m2): the flag sets it in whichever is active."""
    out: dict[str, list[str]] = {}
    for section, (_, cls) in option_sections().items():
        for f in fields(cls):
            if f.name in _CORE_NAMES:
                raise AssertionError(f"option {f.name!r} of {section} is a core config field")
            out.setdefault(f.name, []).append(section)
    return out


def _with_options(
    config: Config, options: dict[str, tuple[str, Any]], source: str, lenient: frozenset[str]
) -> Config:
    """``config`` whose ``options`` are the active entries' dataclasses (defaults where the
    entry changed), with ``options`` ``{field: (key as written, value)}`` set on them. A field
    no active entry declares is refused naming who takes it; one in ``lenient`` (a family
    field of a run folder written before the sections, flat in model:/train:) is dropped."""
    sections = option_sections()
    declared = option_fields()
    active = {}
    for name, owner in OWNERS.items():
        entry = active_entry(config, owner)
        cls = sections[entry][1] if entry in sections and sections[entry][0] is owner else None
        held = getattr(config, name).options
        if cls is None:
            held = None
        elif type(held) is not cls:
            held = cls()
        active[name] = (entry, cls, held)
    for field_name, (key, value) in options.items():
        where = key if key.startswith("--") else f"{source}: {key}"
        takes = {sections[e][1] for e in declared[field_name]}
        targets = [n for n, (_, cls, _) in active.items() if cls is not None and cls in takes]
        if not targets:
            if key in lenient:
                continue
            takers = ", ".join(f"--{sections[e][0].selector} {e}" for e in declared[field_name])
            kinds = sorted({sections[e][0].section for e in declared[field_name]})
            now = ", ".join(f"--{OWNERS[n].selector} {active[n][0]}" for n in kinds)
            raise VaelabError(f"{where}: an option of {takers} only (this run: {now})")
        for n in targets:
            entry, cls, held = active[n]
            tp = typing.get_type_hints(cls)[field_name]
            active[n] = (entry, cls, replace(held, **{field_name: coerce(value, tp, where)}))
    return replace(
        config,
        **{n: replace(getattr(config, n), options=held) for n, (_, _, held) in active.items()},
    )


def resolve(config: Config) -> Config:
    """``config`` with every "follows from another option" default filled in, as recorded
    in the run's config.yaml: the arch's widths, the model's objective, and the active
    family's and objective's options (their defaults where unset)."""
    objective = config.train.objective or default_objective(config.model.model)
    config = replace(
        config,
        model=resolve_model(config.model),
        train=replace(config.train, objective=objective),
    )
    return _with_options(config, {}, "config", frozenset())


def field_index() -> dict[str, tuple[str, dataclasses.Field]]:
    """Map each core field name to (section, Field); names are unique across sections.
    (``options`` is not a field of its own: its dataclass's fields are.)"""
    index: dict[str, tuple[str, dataclasses.Field]] = {}
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            if f.name == "options":
                continue
            if f.name in index:
                raise AssertionError(f"config field {f.name} appears in two sections")
            index[f.name] = (section, f)
    return index


_CORE_NAMES = frozenset(field_index())


def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` (from YAML or a command-line string) to type ``tp`` or fail clearly."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return coerce(value, inner, where)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace(" ", "").split(",") if v]
        if not isinstance(value, list | tuple):
            raise VaelabError(f"{where}: expected a comma-separated list, got {value!r}")
        return tuple(coerce(v, args[0], where) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise VaelabError(f"{where}: expected true or false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise VaelabError(f"{where}: expected {tp.__name__}, got {value!r}")
        try:
            number = tp(value)
        except (TypeError, ValueError):
            raise VaelabError(f"{where}: expected {tp.__name__}, got {value!r}") from None
        if tp is int and isinstance(value, float) and value != number:
            raise VaelabError(f"{where}: expected an integer, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, dict | list):
            raise VaelabError(f"{where}: expected a string, got {value!r}")
        return str(value)
    raise AssertionError(f"unsupported config type {tp}")


def with_overrides(
    config: Config, overrides: dict[str, Any], source: str, lenient: frozenset[str] = frozenset()
) -> Config:
    """Return ``config`` with flat ``{field: value}`` overrides applied and type-checked: core
    fields first, then the options of the model family and objective they select (see
    :func:`_with_options`; ``lenient``: legacy keys dropped where no active entry takes them)."""
    index = field_index()
    declared = option_fields()
    per_section: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    options: dict[str, tuple[str, Any]] = {}
    for key, value in overrides.items():
        key = str(key)  # a config file's key may be a number or null (YAML "1:", "~:")
        # A key written as a flag ("--latent-dim") is named as the flag in errors.
        name = key.lstrip("-").replace("-", "_")
        if name in declared:
            options[name] = (key, value)
            continue
        if name not in index:
            raise unknown_name(source, key, sorted([*index, *declared]), kind="option")
        section, _ = index[name]
        tp = _field_type(SECTIONS[section], name)
        where = key if key.startswith("--") else f"{source}: {key}"
        per_section[section][name] = coerce(value, tp, where)
    config = replace(
        config,
        **{s: replace(getattr(config, s), **kv) for s, kv in per_section.items() if kv},
    )
    return _with_options(config, options, source, lenient)


def flatten(raw: dict[str, Any], source: str) -> tuple[dict[str, Any], frozenset[str]]:
    """A config file's (or a saved run's) mapping as flat ``{field: value}`` overrides, and
    the legacy keys among them. ``model`` is both a section and a field (``--model deep``): a
    mapping under it is the section, any other value is the field. A section named after a
    family or objective (``hvae: {z1_dim: 8}``) holds its options. Family fields inside
    ``model:``/``train:`` are how run folders were written before the sections (every
    family's fields, at their defaults for the others): they are kept for the active family
    and dropped for the others (the returned legacy keys)."""
    flat: dict[str, Any] = {}
    legacy: set[str] = set()
    sections = option_sections()
    for key, value in raw.items():
        if key in SECTIONS and isinstance(value, dict):
            flat.update(value)
            legacy.update(k for k in value if k not in _CORE_NAMES)
        elif key in SECTIONS and key not in _CORE_NAMES:
            raise VaelabError(f"{source}: section {key!r} must be a mapping")
        elif key in sections and isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat, frozenset(legacy)


def read_config_file(path: str | Path) -> tuple[dict[str, Any], frozenset[str]]:
    """A YAML (.yaml/.yml/.json) or TOML (.toml) file's options, :func:`flatten`-ed."""
    path = Path(path)
    if not path.is_file():
        raise VaelabError(f"--config {path}: no such file")
    try:
        text = path.read_text()
        raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise VaelabError(f"--config {path}: cannot parse ({first})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise VaelabError(f"--config {path}: expected a mapping of options")
    return flatten(raw, str(path))


def load_config(path: str | Path, base: Config | None = None) -> Config:
    """Read a YAML (.yaml/.yml/.json) or TOML (.toml) file onto ``base`` (default: defaults)."""
    flat, legacy = read_config_file(path)
    return with_overrides(base or Config(), flat, str(path), legacy)


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (nested by section)."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Inverse of :meth:`Config.to_dict` (strict: unknown keys are errors)."""
    flat, legacy = flatten(raw, source)
    return with_overrides(Config(), flat, source, legacy)


_POSITIVE = ("latent_dim", "batch_size", "samples", "eval_samples", "max_bad_steps")
_POSITIVE += ("mixtures", "blocks")
# Choices that are no registry (the registries' names are checked by
# vaelab.training.options.check_names, the one place a name is checked).
_CHOICES = {
    "binarize": ("none", "static", "dynamic"),
    "precision": ("fp32", "bf16", "fp16"),
}


def validate(config: Config) -> Config:
    """Check values that a type alone cannot (sizes >= 1, choices); names of parts are
    checked against their registries by :func:`vaelab.training.options.check_names`, and
    a family's or objective's options by its own ``check_config``."""
    flat = {k: getattr(getattr(config, s), k) for k, (s, _) in field_index().items()}
    for name in _POSITIVE:
        at_least(f"--{name.replace('_', '-')}", flat[name])
    for name, choices in _CHOICES.items():
        if flat[name] not in choices:
            raise unknown_name(f"--{name.replace('_', '-')}", flat[name], choices)
    all_at_least("--hidden", flat["hidden"])
    at_least("--epochs", flat["epochs"], 0)
    positive("--lr", flat["lr"])
    positive("--sigma", flat["sigma"])
    if not 0 < flat["test_fraction"] < 1:
        raise VaelabError(f"--test-fraction: must be in (0, 1), got {flat['test_fraction']}")
    return config
