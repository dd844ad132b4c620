"""A one-line warning, during training, when the latent stays unused (posterior collapse).

The test-set KL(q(z|x) || p(z)) per image (the ``test_kl`` of each metrics row) bounds the
information z carries about an image: below ``KL_NEAR_ZERO`` = 1 nat z tells apart fewer
than e = 2.7 images, and every sample of the model is the same picture (each pixel drawn from
its marginal). :class:`CollapseWatch` warns once per run, at the second epoch in a row after
the KL warm-up (``--warmup-epochs``) whose test KL is below it, naming the remedy. A model
without a posterior (``ae``) has no KL and is never warned about, and an epoch whose KL was
asked to be that small is not counted: a capacity ramp (``--objective annealed``, or
``capacity``) whose target C(t) is still below 1 nat at the epoch's last step.

The remedies are the measured ones (benchmarks/README.md, "Posterior collapse"): a KL weight
above 1 pushes q(z|x) onto p(z) by design; otherwise a decoder whose output barely depends on z
at the start lets the KL win, which the He-initialised resnet bodies and the deep model avoid
on small colour sets, while free bits and a KL warm-up did not rescue such a run.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from vaelab.config import Config
from vaelab.objectives import capacity_ramp
from vaelab.objectives.latent_terms import capacity_at

KL_NEAR_ZERO = 1.0  # nats per image
EPOCHS_IN_A_ROW = 2  # one low epoch can be a transient (the KL often dips, then rises)


@dataclass
class CollapseWatch:
    """Feed it each epoch's metrics row (:meth:`see`); it warns at most once."""

    config: Config
    enabled: bool = True  # False: count, never warn (other ranks; models without q(z|x))
    low: int = 0
    warned: bool = False

    def see(self, row: dict[str, Any]) -> str | None:
        """Count ``row`` (``epoch``, ``step``, ``beta``, ``test_kl``); returns the warning if
        issued."""
        t = self.config.train
        warmed = row["epoch"] >= t.warmup_epochs and row["beta"] >= t.beta
        warmed = warmed and kl_target(self.config, row["step"]) >= KL_NEAR_ZERO
        self.low = self.low + 1 if warmed and row["test_kl"] < KL_NEAR_ZERO else 0
        if not self.enabled or self.warned or self.low < EPOCHS_IN_A_ROW:
            return None
        self.warned = True
        text = (
            f"posterior collapse: the test KL is {row['test_kl']:.2f} nats per image at epoch "
            f"{row['epoch']} (below {KL_NEAR_ZERO:g} since epoch {row['epoch'] - self.low + 1}):"
            f" z is unused and every sample will look the same; {remedy(self.config)}"
        )
        warnings.warn(text, stacklevel=2)
        return text


def kl_target(config: Config, step: int) -> float:
    """The KL in nats per image the objective asks for after ``step`` training steps:
    its capacity ramp's C(t), else infinity (no target: any KL is the model's choice)."""
    ramp = capacity_ramp(config)
    if ramp is None:
        return float("inf")
    steps, final, _ = ramp
    return float(capacity_at(step, final, steps))


def remedy(config: Config) -> str:
    """What to change, in a few words, for the run ``config`` (module docstring)."""
    t, m = config.train, config.model
    if (ramp := capacity_ramp(config)) is not None:
        return f"raise {ramp[2]} (now {ramp[1]:g} nats, the KL target at the ramp's end)"
    if t.beta > 1:
        return f"lower --beta (now {t.beta:g}; 1 is the ELBO)"
    if m.model == "deep":
        return "try more --epochs or a larger --group-channels"
    return (
        f"try --arch resnet or --model deep instead of --model {m.model} --arch {m.arch} "
        '(both keep z on small colour sets: benchmarks/README.md, "Posterior collapse")'
    )
