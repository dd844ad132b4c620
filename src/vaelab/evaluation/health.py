"""Latent health: how much each latent dimension is used.

* KL per dimension: E_x KL(q(z_d|x) || p(z_d)), in closed form for a Gaussian posterior
  against a factorised Gaussian prior (the standard prior). Learned mixture priors do not
  factorise over dimensions, so for them a per-dimension KL is not defined: None.
* Active units (Burda et al., 2016): dimension d is active when
  A_d = Cov_x( E_q[z_d | x] ) > 0.01, i.e. the posterior mean moves with the input. A
  collapsed dimension has q(z_d|x) = p(z_d) for every x: its mean is constant, A_d ~ 0.
"""

from __future__ import annotations

from typing import Any

import torch

from vaelab.evaluation.explore import posterior_stats  # shared with the GMM sampler

ACTIVE_THRESHOLD = 0.01


def unit_activity(means: torch.Tensor) -> torch.Tensor:
    """A_d = Var_x(E_q[z_d|x]) for posterior means ``(N, D)``; returns ``(D,)`` activities."""
    return means.double().var(0, unbiased=True)


def latent_health(model: torch.nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """KL per dimension, activity per dimension, the active-unit count and warnings."""
    means, kl = posterior_stats(model, x)
    if len(means) < 2:  # a variance across images needs two of them
        return {
            "active_units": None, "latent_dim": means.shape[1], "activity_per_dim": None,
            "kl_per_dim": kl.mean(0).tolist() if kl is not None else None, "collapsed": None,
            "warnings": ["active units left out: they need 2 test images or more, got 1"],
        }  # fmt: skip
    activity = unit_activity(means)
    active = int((activity > ACTIVE_THRESHOLD).sum())
    dims = means.shape[1]
    warnings = []
    if active == 0:
        warnings.append(
            "posterior collapse: no latent dimension is active (Cov_x E[z|x] <= 0.01); "
            "the decoder ignores z"
        )
    elif active < dims:
        warnings.append(f"{dims - active} of {dims} latent dimensions are inactive (collapsed)")
    return {
        "active_units": active,
        "latent_dim": dims,
        "activity_per_dim": activity.tolist(),
        "kl_per_dim": kl.mean(0).tolist() if kl is not None else None,
        "collapsed": active == 0,
        "warnings": warnings,
    }
