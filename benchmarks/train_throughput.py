"""Training throughput: vaelab's training step vs a minimal hand-written PyTorch loop.

Model: the reference MLP VAE (784-400-20, ReLU, Bernoulli likelihood, analytic KL,
Adam lr 1e-3, batch 128) on Fashion-MNIST intensities in [0, 1]. Both sides keep the
data in memory; they run interleaved in one process (round r: minimal, then each
vaelab variant, for ``--steps`` steps each) so machine noise hits them alike. vaelab
runs through the objects fit() uses (build_model, make_optimizer, Stepper, prepare),
so what is timed is its real training step. Prints images/s medians and ratios and
writes JSON. Also times ``vaelab.evaluate`` (importance-sampled NLL, K=1000) against
the minimal loop's straightforward equivalent. ``--references`` adds hand-tuned
minimal loops (fused Adam; fused Adam + torch.compile of the loss) as yardsticks for
what the same maths can reach on the machine.

    python benchmarks/train_throughput.py --rounds 7 --steps 150
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from provenance import provenance, save_json  # benchmarks/provenance.py
from vaelab.config import Config, with_overrides
from vaelab.data import load_dataset
from vaelab.data.prepare import epoch_permutation, prepare
from vaelab.evaluation.nll import log_likelihood
from vaelab.models import build_model
from vaelab.training.step import Stepper, make_optimizer


class MinimalVAE(nn.Module):
    """The tutorials' VAE, written the plain way."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def encode(self, x):
        h = F.relu(self.fc1(x))
        return self.fc21(h), self.fc22(h)

    def decode(self, z):
        return self.fc4(F.relu(self.fc3(z)))

    def loss(self, x):
        mu, logvar = self.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        bce = F.binary_cross_entropy_with_logits(self.decode(z), x, reduction="sum")
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return (bce + kl) / len(x)


def minimal_round(model, opt, x_all: torch.Tensor, steps: int, bs: int, offset: int) -> float:
    loss_fn = getattr(model, "compiled_loss", model.loss)
    t0 = time.perf_counter()
    for i in range(steps):
        start = ((offset + i) * bs) % (len(x_all) - bs)
        x = x_all[start : start + bs]
        loss = loss_fn(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * bs / (time.perf_counter() - t0)


def vaelab_round(stepper: Stepper, train_x: torch.Tensor, perm, steps: int, bs: int, offset: int):
    sums = torch.zeros(4)
    t0 = time.perf_counter()
    for i in range(steps):
        b = (offset + i) % (len(perm) // bs)
        x = prepare(train_x.index_select(0, perm[b * bs : (b + 1) * bs]), dynamic=False)
        _, loss, stats = stepper(x, 1.0)
        sums += torch.stack([loss.detach(), stats["bound"], stats["recon"], stats["kl"]])
    return steps * bs / (time.perf_counter() - t0)


def make_vaelab(variant: str, shape):
    cfg = with_overrides(
        Config(), {"hidden": "400", "latent_dim": 20, "compile": variant == "compile"}, "bench"
    )
    torch.manual_seed(0)
    model = build_model(cfg.model, shape)
    opt = make_optimizer(model, cfg)
    return Stepper(model, opt, cfg, torch.device("cpu"))


def matmul_floor_ms(bs: int, rounds: int) -> float:
    """Median ms for the matrix products of one training step and nothing else: the 4
    forward products (with bias) and the 7 backward ones (every weight gradient, input
    gradients for all layers but the first), on random tensors of the step's shapes."""
    r = torch.randn
    x, h, z, h3 = r(bs, 784), r(bs, 400), r(bs, 20), r(bs, 400)
    w1, w2, w3, w4 = r(400, 784), r(40, 400), r(400, 20), r(784, 400)
    b1, b2, b3, b4 = r(400), r(40), r(400), r(784)
    go, g3, g2, g1 = r(bs, 784), r(bs, 400), r(bs, 40), r(bs, 400)

    forward = [(b1, x, w1), (b2, h, w2), (b3, z, w3), (b4, h3, w4)]
    backward = [(go.t(), h3), (go, w4), (g3.t(), z), (g3, w3), (g2.t(), h), (g2, w2), (g1.t(), x)]

    def step() -> None:
        for bias, inp, weight in forward:
            torch.addmm(bias, inp, weight.t())
        for a, b in backward:
            torch.mm(a, b)

    for _ in range(50):
        step()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(200):
            step()
        times.append((time.perf_counter() - t0) / 200 * 1e3)
    return statistics.median(times)


@torch.inference_mode()
def minimal_nll(model: MinimalVAE, x: torch.Tensor, k: int) -> torch.Tensor:
    """Straightforward importance sampling: one image at a time, K samples at once."""
    out = []
    for xi in x:
        mu, logvar = model.encode(xi[None])
        std = torch.exp(0.5 * logvar)
        z = mu + std * torch.randn(k, 20)
        logits = model.decode(z)
        log_px = -F.binary_cross_entropy_with_logits(
            logits, xi.expand_as(logits), reduction="none"
        ).sum(1)
        log_pz = torch.distributions.Normal(0, 1).log_prob(z).sum(1)
        log_q = torch.distributions.Normal(mu, std).log_prob(z).sum(1)
        out.append(torch.logsumexp(log_px + log_pz - log_q, 0) - math.log(k))
    return torch.stack(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--variants", default="eager,compile")
    ap.add_argument(
        "--references",
        default="minimal-fused,minimal-fused-compile",
        help="hand-tuned minimal loops to time beside vaelab ('' for none)",
    )
    ap.add_argument("--eval-images", type=int, default=500, help="images for the NLL timing")
    ap.add_argument("--eval-full", action="store_true", help="also time K=1000 on all 10k")
    ap.add_argument("--out", default="benchmarks/results/train_throughput.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(torch.get_num_threads())
    data = load_dataset("fashion-mnist")
    train_u8 = data.train_x
    x_float = train_u8.float().div(255).reshape(len(train_u8), -1)
    bs = 128
    torch.manual_seed(0)
    minimal = MinimalVAE()
    min_opt = torch.optim.Adam(minimal.parameters(), lr=1e-3)
    # References, not vaelab: the minimal loop with fused Adam, and with fused Adam and
    # torch.compile of its loss: what the same maths reaches when hand-tuned here.
    references = {}
    for name in args.references.split(",") if args.references else []:
        torch.manual_seed(0)
        ref = MinimalVAE()
        if name == "minimal-fused-compile":
            ref.compiled_loss = torch.compile(ref.loss)
        references[name] = (ref, torch.optim.Adam(ref.parameters(), lr=1e-3, fused=True))
    variants = [v for v in args.variants.split(",") if v]
    steppers = {v: make_vaelab(v, data.image_shape) for v in variants}
    perm = epoch_permutation(len(train_u8), 0, 0, torch.device("cpu"))
    # Warm-up (compilation, allocator, caches) outside the timed rounds.
    minimal_round(minimal, min_opt, x_float, 20, bs, 0)
    for ref, opt in references.values():
        minimal_round(ref, opt, x_float, 20, bs, 0)
    for st in steppers.values():
        vaelab_round(st, train_u8, perm, 20, bs, 0)
        # As in fit(): an epoch ends with a smaller batch (60,000 = 468 x 128 + 96). Under
        # --compile it must not replace the full-batch graph by a slower dynamic-shape one.
        st(prepare(train_u8[: len(train_u8) % bs], dynamic=False), 1.0)
        vaelab_round(st, train_u8, perm, 5, bs, 0)
    speeds: dict[str, list[float]] = {"minimal": [], **{k: [] for k in references}}
    speeds.update({f"vaelab-{v}": [] for v in variants})
    for r in range(args.rounds):
        off = 20 + r * args.steps
        speeds["minimal"].append(minimal_round(minimal, min_opt, x_float, args.steps, bs, off))
        for name, (ref, opt) in references.items():
            speeds[name].append(minimal_round(ref, opt, x_float, args.steps, bs, off))
        for v, st in steppers.items():
            speeds[f"vaelab-{v}"].append(vaelab_round(st, train_u8, perm, args.steps, bs, off))
        print(
            f"round {r + 1}: " + ", ".join(f"{k} {s[-1]:.0f}" for k, s in speeds.items()),
            flush=True,
        )
    med = {k: statistics.median(s) for k, s in speeds.items()}
    ratios = {k: med[k] / med["minimal"] for k in med if k != "minimal"}
    # Forward, weight gradients, and input gradients of every layer but the first (the
    # images need none): 3 x forward - the first layer's 2 * 784 * 400.
    fwd = 2 * (784 * 400 + 400 * 40 + 20 * 400 + 400 * 784)
    flops_per_image = 3 * fwd - 2 * 784 * 400
    floor_ms = matmul_floor_ms(bs, args.rounds)
    result = {
        **provenance(),
        "batch_size": bs,
        "images_per_s_median": med,
        "images_per_s_rounds": speeds,
        "ratio_vs_minimal": ratios,
        "gflops_per_s_median": {k: v * flops_per_image / 1e9 for k, v in med.items()},
        "matmul_floor": {
            "ms_per_step": floor_ms,
            "images_per_s": bs / floor_ms * 1e3,
            "ratio_vs_minimal": bs / floor_ms * 1e3 / med["minimal"],
            "note": "the step's 11 matrix products alone, timed back to back: no loop "
            "can beat this with the same maths and BLAS",
        },
    }
    # Importance-sampled NLL, K = 1000: the vaelab model's weights after the timed rounds,
    # copied into the minimal model, so both sides estimate the same log p(x).
    vae = steppers[variants[0]].model.model  # Stepper -> LossModule -> VAE
    for src, dst in zip(
        [vae.encoder[1], vae.decoder[0], vae.decoder[2]],
        [minimal.fc1, minimal.fc3, minimal.fc4],
        strict=True,
    ):
        dst.load_state_dict(src.state_dict())
    enc_out = vae.encoder[3]
    minimal.fc21.weight.data, minimal.fc21.bias.data = (
        enc_out.weight[:20].clone(),
        enc_out.bias[:20].clone(),
    )
    minimal.fc22.weight.data, minimal.fc22.bias.data = (
        enc_out.weight[20:].clone(),
        enc_out.bias[20:].clone(),
    )
    n = args.eval_images
    test = data.test_x[:n]
    t0 = time.perf_counter()
    ll_min = minimal_nll(minimal, test.float().div(255).reshape(n, -1), 1000)
    t_min = time.perf_counter() - t0
    t0 = time.perf_counter()
    ll_vae = log_likelihood(vae, test, samples=1000)  # its default chunking
    t_vae = time.perf_counter() - t0
    result["nll_k1000"] = {
        "images": n,
        "seconds_minimal": t_min,
        "seconds_vaelab": t_vae,
        "seconds_per_1000_images_minimal": t_min * 1000 / n,
        "seconds_per_1000_images_vaelab": t_vae * 1000 / n,
        "speedup": t_min / t_vae,
        "mean_log_px_minimal": ll_min.mean().item(),
        "mean_log_px_vaelab": ll_vae.mean().item(),
    }
    if args.eval_full:
        t0 = time.perf_counter()
        log_likelihood(vae, data.test_x, samples=1000)
        result["nll_k1000"]["seconds_vaelab_full_test_set"] = time.perf_counter() - t0
    print(
        json.dumps(
            {
                k: result[k]
                for k in ("images_per_s_median", "ratio_vs_minimal", "matmul_floor", "nll_k1000")
            },
            indent=2,
        )
    )
    save_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
