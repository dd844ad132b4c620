"""Typed, frozen configuration: defaults < config file < command-line flags.

A run is described by one :class:`Config` of three sections. Every field has a
unique name across sections, so the command line exposes each as
``--field-name`` (underscores become dashes) and a file may use either the
nested form ``{model: {latent_dim: 20}}`` or the flat form ``{latent_dim: 20}``.
Unknown keys are errors, never ignored; values are checked against the type.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import tomllib
import yaml

from vaelab.errors import VaelabError, unknown_name


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
    model: str = "vae"  # autoencoder, VAE, 2-level, class-conditional, M2 or deep hierarchical VAE
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
    num_classes: int = 10  # cvae | m2: number of classes of the labels
    m1_run: str | None = None  # m2: run folder of a trained VAE (M1); M2 models its latents
    z1_dim: int = 64  # hvae: size of the lower stochastic layer z1 (z2 is --latent-dim)
    z1_hidden: tuple[int, ...] = (128,)  # hvae: widths of the MLPs between z1 and z2
    deep_widths: tuple[int, ...] = (32, 64, 64)  # deep: channels per resolution, finest first
    deep_groups: tuple[int, ...] = (0, 2, 4)  # deep: latent groups per resolution, finest first
    group_channels: int = 8  # deep: latent channels per group (group = channels x side x side)
    deep_blocks: int = 1  # deep: residual cells per resolution in the encoder


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
    alpha: float | None = None  # m2: weight of the classification loss (None: 10 * N)
    labels_per_class: int = 0  # m2: keep this many labels per class, hide the rest (0: all)
    ema: float | None = None  # weight-average decay for eval/sampling (None: .999 deep, else off)
    skip_threshold: float | None = None  # skip steps whose gradient norm exceeds this (VDVAE)
    free_bits: float = 0.0  # elbo: floor (nats) on each latent group's batch-mean KL


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain-Python form (tuples become lists), for YAML/JSON."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}

# Defaults that follow from another option. Each body has its own widths: the MLP's 400
# units as one conv layer would be 400 channels and a 78,400-wide linear layer (4.8 M
# parameters on 28x28); 32,64 is the shipped conv config (configs/fashion_conv.yaml).
ARCH_WIDTHS: dict[str, tuple[int, ...]] = {"mlp": (400,), "conv": (32, 64), "resnet": (32, 64, 128)}
# The objective a model trains with unless told otherwise (M2 accepts only its own).
MODEL_OBJECTIVE: dict[str, str] = {"m2": "m2"}
DEFAULT_OBJECTIVE = "elbo"


def resolve_model(cfg: ModelConfig) -> ModelConfig:
    """``cfg`` with ``hidden=None`` replaced by the arch's widths (unknown arch: unchanged,
    left to the registry's error)."""
    if cfg.hidden is None and cfg.arch in ARCH_WIDTHS:
        return replace(cfg, hidden=ARCH_WIDTHS[cfg.arch])
    return cfg


def resolve(config: Config) -> Config:
    """``config`` with every "follows from another option" default filled in, as recorded
    in the run's config.yaml."""
    objective = config.train.objective
    if objective is None:
        objective = MODEL_OBJECTIVE.get(config.model.model, DEFAULT_OBJECTIVE)
    return replace(
        config,
        model=resolve_model(config.model),
        train=replace(config.train, objective=objective),
    )


def field_index() -> dict[str, tuple[str, dataclasses.Field]]:
    """Map each field name to (section, Field); names are unique across sections."""
    index: dict[str, tuple[str, dataclasses.Field]] = {}
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            if f.name in index:
                raise AssertionError(f"config field {f.name} appears in two sections")
            index[f.name] = (section, f)
    return index


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


def with_overrides(config: Config, overrides: dict[str, Any], source: str) -> Config:
    """Return ``config`` with flat ``{field: value}`` overrides applied and type-checked."""
    index = field_index()
    per_section: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for key, value in overrides.items():
        key = str(key)  # a config file's key may be a number or null (YAML "1:", "~:")
        # A key written as a flag ("--latent-dim") is named as the flag in errors.
        name = key.lstrip("-").replace("-", "_")
        if name not in index:
            raise unknown_name(source, key, sorted(index), kind="option")
        section, _ = index[name]
        tp = _field_type(SECTIONS[section], name)
        where = key if key.startswith("--") else f"{source}: {key}"
        per_section[section][name] = coerce(value, tp, where)
    return replace(
        config,
        **{s: replace(getattr(config, s), **kv) for s, kv in per_section.items() if kv},
    )


def _flatten(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """Nested sections merged into one flat mapping. ``model`` is both a section and a field
    (``--model deep``): a mapping under it is the section, any other value is the field."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if key in SECTIONS and isinstance(value, dict):
            flat.update(value)
        elif key in SECTIONS and key not in _FIELD_NAMES:
            raise VaelabError(f"{source}: section {key!r} must be a mapping")
        else:
            flat[key] = value
    return flat


_FIELD_NAMES = frozenset(f.name for cls in SECTIONS.values() for f in fields(cls))


def load_config(path: str | Path, base: Config | None = None) -> Config:
    """Read a YAML (.yaml/.yml/.json) or TOML (.toml) file onto ``base`` (default: defaults)."""
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
    return with_overrides(base or Config(), _flatten(raw, str(path)), str(path))


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (nested by section)."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Inverse of :meth:`Config.to_dict` (strict: unknown keys are errors)."""
    return with_overrides(Config(), _flatten(raw, source), source)


_POSITIVE = ("latent_dim", "z1_dim", "batch_size", "samples", "eval_samples", "max_bad_steps")
_POSITIVE += ("mixtures", "blocks")
# Likelihoods of 8-bit values (Likelihood.discrete; tests keep the two lists equal): they
# model the 256 levels of the data, so binarized pixels would be a different data set.
EIGHT_BIT_LIKELIHOODS = ("dlogistic", "dmol")
_CHOICES = {
    "binarize": ("none", "static", "dynamic"),
    "objective": ("elbo", "iwae", "m2"),
    "schedule": ("none", "cosine", "step"),
    "precision": ("fp32", "bf16", "fp16"),
}


def validate(config: Config) -> Config:
    """Check values that a type alone cannot (sizes >= 1, choices); names of parts are
    checked by their registries when the model is built."""
    flat = {k: v for section in config.to_dict().values() for k, v in section.items()}
    for name in _POSITIVE:
        if flat[name] < 1:
            raise VaelabError(f"--{name.replace('_', '-')}: must be at least 1, got {flat[name]}")
    for name, choices in _CHOICES.items():
        if flat[name] is not None and flat[name] not in choices:  # None: resolved later
            raise unknown_name(f"--{name.replace('_', '-')}", flat[name], choices)
    for name in ("hidden", "z1_hidden"):
        if any(h < 1 for h in flat[name] or ()):
            flag = name.replace("_", "-")
            raise VaelabError(f"--{flag}: widths must be at least 1, got {flat[name]}")
    if flat["likelihood"] in EIGHT_BIT_LIKELIHOODS and flat["binarize"] != "none":
        raise VaelabError(
            f"--binarize {flat['binarize']}: --likelihood {flat['likelihood']} models the 8-bit"
            " values 0..255; use --binarize none (or a bernoulli likelihood for binary pixels)"
        )
    if flat["epochs"] < 0 or flat["lr"] <= 0 or flat["sigma"] <= 0:
        raise VaelabError("--epochs must be >= 0, --lr and --sigma > 0")
    if not 0 < flat["test_fraction"] < 1:
        raise VaelabError(f"--test-fraction: must be in (0, 1), got {flat['test_fraction']}")
    return config
