"""What a model's forward pass returns: :class:`Terms`, the log-densities objectives reduce.

It lives with the models (not the objectives) because models build it and the layers go
upward only: models -> objectives (docs/architecture.md, tests/test_layers.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class Terms:
    """What a model's forward pass returns; each log-density is ``(K, B)``.

    ``log_pz`` and ``log_qz_x`` may be given as zero-argument functions: they are then
    computed on first use. The ELBO with an analytic KL never reads them, so a training
    step of the tutorials' VAE does not pay for them (about 5% of a small MLP's step).
    """

    def __init__(
        self,
        log_px_z: torch.Tensor,
        log_pz: torch.Tensor | Callable[[], torch.Tensor],
        log_qz_x: torch.Tensor | Callable[[], torch.Tensor],
        kl: torch.Tensor | None = None,  # (B,), analytic KL(q || p) when it exists
        extras: dict[str, torch.Tensor] | None = None,
        kl_groups: torch.Tensor | None = None,  # (G, B): KL per latent group; kl is their sum
    ) -> None:
        self.log_px_z, self.kl, self.kl_groups = log_px_z, kl, kl_groups
        self._log_pz, self._log_qz_x = log_pz, log_qz_x
        self.extras: dict[str, torch.Tensor] = extras if extras is not None else {}

    @property
    def log_pz(self) -> torch.Tensor:
        if callable(self._log_pz):
            self._log_pz = self._log_pz()
        return self._log_pz

    @property
    def log_qz_x(self) -> torch.Tensor:
        if callable(self._log_qz_x):
            self._log_qz_x = self._log_qz_x()
        return self._log_qz_x

    def log_w(self) -> torch.Tensor:
        """Log importance weights ``(K, B)``."""
        return self.log_px_z + self.log_pz - self.log_qz_x

    def kl_per_image(self) -> torch.Tensor:
        """KL per image, ``(B,)``: analytic when available, else the K-sample estimate."""
        if self.kl is not None:
            return self.kl
        return (self.log_qz_x - self.log_pz).mean(0)
