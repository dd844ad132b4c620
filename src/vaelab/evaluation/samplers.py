"""Where generated latents come from: the model's prior, or a Gaussian mixture fitted post hoc.

A VAE's aggregate posterior q(z) = E_x q(z|x) rarely matches its prior: regions of the
prior no image maps to decode to blurry or mixed images. The ``gmm`` sampler fits a
Gaussian mixture (full covariances, scikit-learn's EM) to the posterior means E_q[z|x] of
the training images and samples z from it instead (as in Ghosh et al., 2020). The fit is
saved in the run folder as ``gmm-<N>-<weights hash>.npz`` (weights, means, covariances;
no pickle) and reused by later commands.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vaelab.config import Config
from vaelab.data import dataset_for
from vaelab.data.prepare import train_images
from vaelab.errors import VaelabError, at_least, unknown_name
from vaelab.evaluation.explore import posterior_stats
from vaelab.evaluation.generate import no_prior
from vaelab.evaluation.posthoc import posthoc_for, posthoc_images
from vaelab.training.checkpoint import tensor_digest
from vaelab.training.record import Run


@dataclass(frozen=True)
class GaussianMixture:
    """sum_n w_n N(mu_n, S_n): ``weights (N,)``, ``means (N, D)``, ``covariances (N, D, D)``."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray

    def save(self, path: str | Path) -> Path:
        np.savez(path, weights=self.weights, means=self.means, covariances=self.covariances)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> GaussianMixture:
        with np.load(path, allow_pickle=False) as f:
            return cls(f["weights"], f["means"], f["covariances"])

    def sample(self, n: int, temperature: float = 1.0, generator=None) -> torch.Tensor:
        """``(n, D)`` float64 draws; ``temperature`` scales each component's spread."""
        weights = torch.as_tensor(self.weights, dtype=torch.float64)
        means = torch.as_tensor(self.means, dtype=torch.float64)
        chol = torch.linalg.cholesky(torch.as_tensor(self.covariances, dtype=torch.float64))
        idx = torch.multinomial(weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, means.shape[1], 1, dtype=torch.float64, generator=generator)
        return means[idx] + temperature * (chol[idx] @ eps).squeeze(-1)


MAX_EM_ITERATIONS = 100  # scikit-learn's default max_iter


def fit_gmm(latents: torch.Tensor, components: int = 10, seed: int = 0) -> GaussianMixture:
    """EM fit of a full-covariance mixture to latents ``(N, D)`` (a small ridge, 1e-6, keeps
    each covariance positive definite)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture as SkGMM

    if components < 1 or components > len(latents):
        raise VaelabError(f"--components: must be in 1..{len(latents)}, got {components}")
    # One EM iteration per fit() call (warm_start) so a terminal can show progress; the same
    # iterations and stopping rule (|change of the mean log-likelihood bound| < tol) as one
    # fit() with max_iter=100 (tests/test_samplers.py compares the two).
    gm = SkGMM(components, covariance_type="full", reg_covar=1e-6, random_state=seed,
               warm_start=True, max_iter=1)  # fmt: skip
    data = latents.double().cpu().numpy()
    bar = tqdm(range(MAX_EM_ITERATIONS), desc=f"fitting a {components}-component GMM",
               unit="EM step", disable=not sys.stderr.isatty(), leave=False)  # fmt: skip
    previous = -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # expected: one step per call
        for _ in bar:
            gm.fit(data)
            if abs(gm.lower_bound_ - previous) < gm.tol:
                break
            previous = gm.lower_bound_
    bar.close()
    return GaussianMixture(gm.weights_, gm.means_, gm.covariances_)


def gmm_for(
    model: torch.nn.Module,
    train_x: torch.Tensor | Callable[[], torch.Tensor],
    components: int = 10,
    run_dir: str | Path | None = None,
    limit: int = 20000,
) -> GaussianMixture:
    """The model's aggregate-posterior mixture: loaded from ``run_dir/gmm-<N>-<hash>.npz`` when
    there, else fitted on the posterior means of the first ``limit`` training images
    ``train_x`` (a tensor, or a function returning one) and saved there when ``run_dir``
    is given."""
    # Named after the weights too, so a run trained further gets a fresh fit.
    digest = tensor_digest(model.state_dict())[:10]
    path = Path(run_dir) / f"gmm-{components}-{digest}.npz" if run_dir else None
    if path is not None and path.is_file():
        return GaussianMixture.load(path)
    means, _ = posterior_stats(model, (train_x() if callable(train_x) else train_x)[:limit])
    gmm = fit_gmm(means, components)
    if path is not None:
        gmm.save(path)
    return gmm


def _prior_images(model, n, temperature, **_) -> torch.Tensor:
    # The model's own sample(): models that condition on more than z (CVAE) override it.
    if not model.has_prior:
        raise no_prior(model, "--sampler prior")
    return model.sample(n, temperature)


def _gmm_images(model, n, temperature, gmm: GaussianMixture | None = None, **_) -> torch.Tensor:
    if gmm is None:
        raise VaelabError(
            "--sampler gmm: needs a fitted mixture (see vaelab.evaluation.samplers.gmm_for)"
        )
    param = next(model.parameters())
    z = gmm.sample(n, temperature).to(param.device, param.dtype)
    # A conditional model: the classes in turn, as its own sample() does.
    labels = (torch.arange(n, device=z.device) % model.num_classes,) if model.uses_labels else ()
    return model.likelihood.mean(model.decode(z, *labels))


# name -> function(model, n, temperature, **options) -> images (n, C, H, W) in [0, 1]
SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"prior": _prior_images, "gmm": _gmm_images}

# What each sampler needs prepared; ``train_x`` is a function returning the training images
# (uint8, as the model sees them), called only when a fit must be made.
SETUP: dict[str, Callable[..., dict]] = {
    "prior": lambda model, train_x, components, run_dir: {},
    "gmm": lambda model, train_x, components, run_dir: {
        "gmm": gmm_for(model, train_x, components, run_dir)
    },
}


# Issue 23 (zooa): the post-hoc MAF and two-stage VAE (vaelab.evaluation.posthoc), fitted on
# the run's training codes and cached in the run folder (safetensors + JSON).
SAMPLERS["maf"] = posthoc_images
SAMPLERS["two-stage"] = posthoc_images
SETUP["maf"] = lambda model, train_x, components, run_dir: {
    "net": posthoc_for("maf", model, train_x, run_dir)
}
SETUP["two-stage"] = lambda model, train_x, components, run_dir: {
    "net": posthoc_for("two-stage", model, train_x, run_dir)
}


def prepare_sampler(
    name: str,
    model: torch.nn.Module,
    train_x: Callable[[], torch.Tensor],
    components: int = 10,
    run_dir: str | Path | None = None,
) -> dict:
    """The keyword options :func:`sample_images` needs for sampler ``name``."""
    if name not in SAMPLERS:
        raise unknown_name("--sampler", name, SAMPLERS)
    return SETUP[name](model, train_x, components, run_dir)


def training_images(config: Config, limit: int = 20000) -> torch.Tensor:
    """The first ``limit`` training images of a run with ``config``, binarized as it was
    trained."""
    data = dataset_for(config)
    return train_images(data.train_x, config.data.binarize, config.train.seed, limit)


def check_draw(n: int, temperature: float) -> None:
    """Refuse ``n`` < 1 images or a temperature <= 0, in the flags' words."""
    at_least("-n", n)
    if temperature <= 0:
        raise VaelabError(f"--temperature: must be > 0, got {temperature}")


def sample_with(
    run: Run,
    n: int,
    sampler: str = "prior",
    temperature: float = 1.0,
    components: int = 10,
    seed: int | None = None,
) -> torch.Tensor:
    """``n`` images from a run (``vaelab.open_run``) with latents from ``sampler``; the
    ``gmm`` fit (on the run's training images) is cached in the run folder."""
    check_draw(n, temperature)
    options = prepare_sampler(
        sampler, run.model, lambda: training_images(run.config), components, run.folder
    )
    if seed is not None:
        torch.manual_seed(seed)
    return sample_images(run.model, n, sampler, temperature, **options)


@torch.no_grad()
def sample_images(
    model: torch.nn.Module, n: int, sampler: str = "prior", temperature: float = 1.0, **options
) -> torch.Tensor:
    """``(n, C, H, W)`` means of p(x|z) at z from ``sampler`` (``gmm`` needs ``gmm=``)."""
    if sampler not in SAMPLERS:
        raise unknown_name("--sampler", sampler, SAMPLERS)
    model.eval()
    return SAMPLERS[sampler](model, n, temperature, **options)
