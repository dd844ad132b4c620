"""The model contract: what every model family provides, and what it may.

A model family is one class, registered by one line in :data:`vaelab.models.MODELS`. It
subclasses :class:`Model` and provides, with images ``x`` floats in [0, 1] ``(B, C, H, W)``,
labels ``y`` int64 ``(B,)`` and latents ``z`` ``(K, B, D)``:

    from_config(cfg, image_shape, **deps) -> model      (classmethod; cfg a ModelConfig)
    likelihood, image_shape, latent_dim                 p(x|z) (a Likelihood), (C, H, W), D
    forward(x, K[, y=]) -> Terms                        log p(x|z), log p(z), log q(z|x) (K, B)
    decode(z[, y]) -> likelihood parameters (..., n_params, C, H, W)
    latent_mean(x[, y]) -> (B, D)                      the point a latent plot shows
    reconstruct(x[, y]) -> (B, C, H, W)
    log_weights(x, K) -> (K', B)                        what importance-sampled log p(x) uses

and, where its capabilities say so (class attributes, read by callers instead of probing
the model with ``hasattr``; a capability a family does not declare is off):

    has_posterior       encode(x[, y]) -> q(z|x) (a torch Distribution, event (D,)) and
                        terms_at(x, z, q) -> Terms; False: a point code (the autoencoder)
    has_prior           sample(n, temperature[, y]) -> (n, C, H, W) from p(z) p(x|z)
    any_estimator       one posterior sample site behind encode/terms_at, so every gradient
                        estimator applies (False: forward draws its latents itself)
    uses_labels         a class label travels as an argument: encode(x, y), decode(z, y),
                        forward(x, K, y=), sample(n, t, y); num_classes, class_log_probs(x),
                        infer_labels(x) -> (B,); label_args(x) gives a tool the (y,) to pass
    semi_supervised     trains with hidden labels (-1) and a class loss (M2)
    has_classifier      class_logits(x) from a network ``classifier`` q(y|x)
    latent_groups       num_groups and group_kl(x) -> (G,) KL per latent group, top first
    group_temperatures  sample(n, [t_1..t_G]) and temperatures(t) (checks and expands t)
    chain               the name of the exact Metropolis-within-Gibbs completion chain that
                        applies (vaelab.evaluation.chains.CHAINS), or None. Not
                        inherited: a subclass is a different model and declares its own (else None).
    export_refusal      why `vaelab export` cannot write its parts as two plain graphs
                        (image -> posterior parameters, z -> likelihood parameters), naming
                        the part; None: it can. Not inherited (a subclass declares its own;
                        else it is refused).
    discrete_codes      a grid of discrete codes (VQ-VAE): codes(x) -> (B, h, w),
                        decode_codes(codes), grid, num_codes, uniform_kl(); its prior over
                        codes is trained separately (vaelab train-prior) and read from the
                        run folder by the tools, so has_prior stays False on the model
    codes_in_terms      forward puts its latent draws (the codes of ``ae``) in
                        ``Terms.extras["z"]`` ``(K, B, D)``: what the WAE/SWAE/RAE objectives
                        match to the prior. Not inherited.
    likelihood_bound    None where the model defines p(x) = E_p(z) p(x|z) (ELBO and NLL
                        mean something); else the one line why there is none, which
                        evaluate prints instead of those numbers (the plain autoencoder)
    on_images           False where the model sees features of another model (M1+M2): its
                        outputs become images through to_images()
    latent_space        where z lives, for the tools: "euclidean" (R^D), "sphere" (the unit
                        sphere S^{D-1}: interpolation follows great circles, moved points are
                        put back on the sphere) or "categorical" (a relaxed one-hot group
                        groups of ``categories`` after ``continuous_dims`` real numbers: a
                        traversal of a group shows its classes, similar draws from q(z|x))
    capacity_terms      Terms.extras holds kl_cont, kl_disc and capacity (C_z, C_c, gamma) for
                        JointVAE's ``--objective capacity`` (objectives/capacity.py)
    default_ema         the weight-average decay training uses when --ema is unset
    options             the family's options: a frozen dataclass whose fields are its flags
                        (``--z1-dim``), held in ``ModelConfig.options`` and written to
                        config.yaml as the section named after the family; None: it has none

A family's own checks of its config (that need no image) go in ``check_config(cfg)``, run
before anything is read or created; ``describe(cfg)`` names the model for titles.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

from vaelab.config import ModelConfig
from vaelab.likelihoods import Likelihood, build_likelihood


class Model(nn.Module):
    """The base of every model family; see the module docstring for the contract."""

    has_posterior: ClassVar[bool] = False
    has_prior: ClassVar[bool] = False
    any_estimator: ClassVar[bool] = False
    uses_labels: ClassVar[bool] = False
    semi_supervised: ClassVar[bool] = False
    has_classifier: ClassVar[bool] = False
    latent_groups: ClassVar[bool] = False
    group_temperatures: ClassVar[bool] = False
    chain: ClassVar[str | None] = None
    discrete_codes: ClassVar[bool] = False
    export_refusal: ClassVar[str | None] = (
        "encoder and decoder: this family declares no single-network encoder and decoder"
    )
    codes_in_terms: ClassVar[bool] = False
    likelihood_bound: ClassVar[str | None] = None
    on_images: bool = True
    latent_space: ClassVar[str] = "euclidean"  # euclidean | sphere | categorical
    capacity_terms: ClassVar[bool] = False  # extras for --objective capacity (JointVAE)
    default_ema: ClassVar[float] = 0.0  # training's weight average when --ema is unset
    options: ClassVar[type | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "chain" not in cls.__dict__:  # an exact chain is never inherited
            cls.chain = None
        if "export_refusal" not in cls.__dict__:  # nor is being exportable
            cls.export_refusal = Model.export_refusal
        if "codes_in_terms" not in cls.__dict__:  # a subclass's forward is its own
            cls.codes_in_terms = False
        if cls.options is not None and not (
            dataclasses.is_dataclass(cls.options) and cls.options.__dataclass_params__.frozen
        ):
            raise TypeError(f"{cls.__name__}.options must be a frozen dataclass")

    @classmethod
    def options_of(cls, cfg: ModelConfig) -> Any:
        """The family's options in ``cfg`` (their defaults where the config holds none, e.g.
        a ``ModelConfig`` built by hand)."""
        if cls.options is None:
            return None
        return cfg.options if isinstance(cfg.options, cls.options) else cls.options()

    @classmethod
    def check_config(cls, cfg: ModelConfig) -> None:
        """Refuse options this family cannot use, before anything is read or created."""

    @classmethod
    def describe(cls, cfg: ModelConfig) -> str:
        """The model of ``cfg`` in a few words, for titles (the report's heading)."""
        return f"{cfg.model} {cfg.arch} latent {cfg.latent_dim}"

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def label_args(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The extra arguments of ``encode``/``decode`` for images ``x``: ``(y,)`` with the
        inferred labels ``(B,)`` for a model that ``uses_labels`` (``infer_labels``), else
        ``()``. How a tool written for a VAE passes a label, never storing it on the model."""
        return (self.infer_labels(x),) if self.uses_labels else ()

    def epoch_stats(self) -> dict[str, float]:
        """Figures of the training steps since the last call that training records per
        epoch in metrics.jsonl (a VQ-VAE's codebook usage); none by default."""
        return {}

    def inference_parameters(self) -> list[nn.Parameter]:
        """The parameters of q(z|x) (the encoder network's): what PIWAE trains with its
        inference-network objective; the others are the generative model's."""
        return list(self.encoder.parameters())

    def generative_parameters(self) -> list[nn.Parameter]:
        """Every parameter not in :meth:`inference_parameters` (decoder, prior)."""
        ids = {id(p) for p in self.inference_parameters()}
        return [p for p in self.parameters() if id(p) not in ids]

    def to_images(self, out: torch.Tensor) -> torch.Tensor:
        """What the model's decoded means are as images (themselves, unless ``on_images`` is
        False)."""
        return out


def flat_decode(decoder: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """``decoder`` over latents ``(..., D)`` of any leading shape: parameters
    ``(..., n_params, C, H, W)`` (the decoder bodies take ``(N, D)``)."""
    lead = z.shape[:-1]
    params = decoder(z.reshape(-1, z.shape[-1]))
    return params.reshape(*lead, *params.shape[1:])


def likelihood_of(cfg: ModelConfig, image_shape: tuple[int, int, int]) -> Likelihood:
    """The likelihood p(x|z) ``cfg`` names (``--likelihood``, ``--sigma``, ``--mixtures``)."""
    return build_likelihood(cfg.likelihood, image_shape, cfg.sigma, cfg.mixtures)
