"""Vector quantisation (van den Oord et al. 2017, "Neural Discrete Representation Learning").

An encoder output z_e ``(B, D, h, w)`` is a grid of D-dim vectors; each is replaced by its
nearest codebook entry, k(i) = argmin_k ||z_e(i) - e_k||^2, giving z_q ``(B, D, h, w)`` and
the code grid ``(B, h, w)`` (int64 in [0, K)). Gradients pass straight through,
z_q_st = z_e + sg(e_k - z_e): its value is e_k, its gradient with respect to z_e the identity.

Per image (summed over the h*w positions and D dimensions, the scale of a log p(x|z) summed
over pixels) the two losses of the paper's eq. 3 are

    commitment  ||z_e - sg(e)||^2     moves the encoder only (weighted by --commitment)
    codebook    ||sg(z_e) - e||^2     moves the codebook only (``mode="loss"``)

With ``mode="ema"`` (the paper's appendix; Razavi et al. 2019) the codebook is not a trained
parameter: in training each step updates, with n_k the batch's count of code k and s_k the
sum of the vectors assigned to it,

    N_k <- decay N_k + (1 - decay) n_k          m_k <- decay m_k + (1 - decay) s_k
    e_k  = m_k / Ñ_k,   Ñ_k = (N_k + eps) / (sum_j N_j + K eps) * sum_j N_j   (Laplace smoothing)

Initialisation: the first training batch sets the codebook to K of its encoder vectors
chosen by k-means++ seeding (:func:`spread_picks`: each next pick drawn with probability
proportional to its squared distance from the picks so far), a data-dependent start that
covers the batch's vectors instead of stacking codes where most vectors are (uniform
picks on emoji put many codes on the white background's near-identical vectors: ties that
only one code wins).

Dead codes: in both modes N_k (the usage EMA, in vectors per batch; it starts at 1) and
the steps since each code was last assigned are tracked; after a training step a code
with N_k < ``restart_below`` or unassigned for ``restart_after`` steps is restarted, with
N_k = 1, m_k = e_k = the new vector and its idle count 0. The new vectors are the batch's
encoder vectors picked by the same k-means++ rule, from each vector's squared distance to
its code: the restarted codes land where the codebook serves the batch worst (and never
two on one vector). Global torch RNG, so a resumed run repeats it. Why the idle rule: the
encoder's outputs move as a whole while the EMA codebook follows only the codes it
assigns, so a move leaves codes behind; with decay 0.99 the usage EMA of an abandoned code
that had its share (32 vectors per batch at K = 256, 8192 vectors) falls below 0.9 only
after ~350 steps, so abandoned codes stayed unrestarted for epochs while the batch used a
few dozen codes (emoji, benchmarks/README.md "Discrete codes").
``epoch_counts`` (float64, persistent: a mid-epoch checkpoint keeps it) accumulates the
training assignments until :meth:`take_epoch_counts`.
"""

from __future__ import annotations

import torch
from torch import nn

MODES = ("ema", "loss")


def spread_picks(flat: torch.Tensor, k: int, d2: torch.Tensor | None = None) -> torch.Tensor:
    """Indices ``(k,)`` of rows of ``flat`` ``(N, D)`` picked by k-means++ seeding (Arthur &
    Vassilvitskii 2007): each pick drawn with probability proportional to d2, the squared
    distance of each row to the nearest of the picks so far (or to the given ``d2`` ``(N,)``,
    distances to existing codes; without it the first pick is uniform), then d2 updated by
    the pick. Rows equal to a pick get d2 = 0 and are not picked again while any row has
    d2 > 0; when every d2 is 0 the pick is uniform. Global torch RNG."""
    picks = torch.empty(k, dtype=torch.long, device=flat.device)
    first = 0
    if d2 is None and k:
        picks[0] = torch.randint(len(flat), (), device=flat.device)
        d2, first = (flat - flat[picks[0]]).square().sum(1), 1
    d2 = d2.float() if d2 is not None else d2
    for i in range(first, k):  # no host sync: the all-zero case is a device-side where
        weights = torch.where(d2.sum() > 0, d2, torch.ones_like(d2))
        picks[i] = torch.multinomial(weights, 1)[0]
        d2 = torch.minimum(d2, (flat - flat[picks[i]]).square().sum(1))
    return picks


def perplexity(counts: torch.Tensor) -> float:
    """exp(entropy) of the code frequencies ``counts`` ``(K,)``: K when codes are used
    uniformly, 1 when one code takes everything (0 counts: 0)."""
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts.double() / total
    nz = p[p > 0]
    return float(torch.exp(-(nz * nz.log()).sum()))


class VectorQuantizer(nn.Module):
    """Nearest-neighbour quantiser of ``codes`` entries of dimension ``dim``; see the module
    docstring. ``forward(z_e)`` -> (z_q_st, codes, commitment, codebook_loss), the losses
    ``(B,)`` per image."""

    def __init__(
        self, codes: int, dim: int, mode: str = "ema", decay: float = 0.99, eps: float = 1e-5,
        restart_below: float = 0.9, restart_after: int = 20,
    ) -> None:  # fmt: skip
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.codes, self.dim, self.mode = codes, dim, mode
        self.decay, self.eps, self.restart_below = decay, eps, restart_below
        self.restart_after = restart_after
        init = torch.empty(codes, dim).uniform_(-1.0 / codes, 1.0 / codes)
        self.codebook = nn.Parameter(init, requires_grad=mode == "loss")
        self.register_buffer("cluster_size", torch.ones(codes))
        self.register_buffer("embed_sum", init.clone())
        self.register_buffer("epoch_counts", torch.zeros(codes, dtype=torch.float64))
        self.register_buffer("restarts", torch.zeros((), dtype=torch.int64))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self.register_buffer("idle", torch.zeros(codes, dtype=torch.int64))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # A checkpoint from before the idle counts: every code counts as just used.
        state_dict.setdefault(prefix + "idle", torch.zeros_like(self.idle))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index ``(N,)`` of the nearest code to each row of ``flat`` ``(N, D)``."""
        e = self.codebook.detach()
        dist = flat.square().sum(1, keepdim=True) - 2 * flat @ e.t() + e.square().sum(1)[None]
        return dist.argmin(1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Code vectors of a grid ``(B, h, w)``: ``(B, D, h, w)``."""
        return self.codebook[codes].permute(0, 3, 1, 2)

    def forward(self, z_e: torch.Tensor):
        b, d, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)
        idx = self.nearest(flat.detach())
        if self.training:
            idx = self._update(flat.detach().float(), idx)
        codes = idx.view(b, h, w)
        e = self.lookup(codes).to(z_e.dtype)
        commitment = (z_e - e.detach()).square().flatten(1).sum(1)
        codebook_loss = (z_e.detach() - e).square().flatten(1).sum(1)
        z_q = z_e + (e - z_e).detach()  # straight-through: value e, gradient identity
        return z_q, codes, commitment, codebook_loss

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The usage EMA, the codebook's EMA update (``mode="ema"``), the epoch's counts and
        dead-code restarts, from one training batch's vectors ``(N, D)`` and codes ``(N,)``;
        returns the codes (re-assigned after the first batch's initialisation)."""
        if not bool(self.initialised):  # the codebook starts at K vectors of the first batch
            picks = flat[spread_picks(flat, self.codes)]
            self.codebook.data.copy_(picks)
            self.embed_sum.copy_(picks)
            self.initialised.fill_(True)
            idx = self.nearest(flat)
        counts = torch.bincount(idx, minlength=self.codes).to(flat.dtype)
        self.epoch_counts += counts.double()
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        if self.mode == "ema":
            sums = torch.zeros_like(self.embed_sum).index_add_(0, idx, flat)
            self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            n = self.cluster_size.sum()
            smoothed = (self.cluster_size + self.eps) / (n + self.codes * self.eps) * n
            self.codebook.data.copy_(self.embed_sum / smoothed[:, None])
        self.idle.add_(1).masked_fill_(counts > 0, 0)
        dead = self.cluster_size < self.restart_below
        if self.restart_after > 0:
            dead |= self.idle >= self.restart_after
        k = int(dead.sum())
        if k:  # at the vectors the codebook (as updated) serves worst: k-means++ seeding
            d2 = (flat - self.codebook.detach()[idx].float()).square().sum(1)
            picks = flat[spread_picks(flat, k, d2)].to(self.codebook.dtype)
            self.codebook.data[dead] = picks
            self.embed_sum[dead] = picks
            self.cluster_size[dead] = 1.0
            self.idle[dead] = 0
            self.restarts += k
        return idx

    def take_epoch_counts(self) -> torch.Tensor:
        """The training assignments per code since the last call ``(K,)``, then zeroed."""
        counts = self.epoch_counts.clone()
        self.epoch_counts.zero_()
        return counts
