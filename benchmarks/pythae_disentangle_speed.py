"""Training-step speed of vaelab's beta-TCVAE and FactorVAE against pythae 0.1.2's BetaTCVAE
and FactorVAE (issue 21: images/s ratio, goal >= 1.3x), side by side in one run.

Both sides train the same conv body (vaelab's ``--arch conv --hidden 32,64``: two 3x3
stride-2 convolutions with ReLU and a linear layer to (mu, log-variance); the decoder its
mirror with transposed convolutions), latent dim 10, Bernoulli / BCE reconstruction, Adam,
the same batch size, on the same dsprites-small images (written once to a .npy). FactorVAE's
discriminator is pythae's default, 5 hidden layers of 1000 LeakyReLU units (vaelab:
``--disc-layers 5 --disc-hidden 1000``). pythae's FactorVAE step is its AdversarialTrainer's
(autoencoder loss backward with retain_graph, discriminator loss backward, both optimizers
step); it uses half of each batch for the VAE and half for the permuted samples, vaelab the
whole batch for both: images/s counts the images a step consumes (the batch) on both sides.
pythae's BetaTCVAE step is its BaseTrainer's (loss backward, step), ``use_mss`` as vaelab's
``--tc-sampling``. vaelab's step is ``vaelab.training.loop.train_step`` on a real session.

Each measurement is a fresh process (vaelab's in vaelab's venv, pythae's in
/work/pythae-venv); rounds alternate the two sides so that load on a shared machine falls on
both. The ratio is the median over rounds of vaelab's images/s over pythae's.

``--half-batch`` is the like-for-like FactorVAE comparison: vaelab's step on batch/2 images
against pythae's on the full batch, so that both VAEs learn from batch/2 images per step;
the ratio is then of those images (the VAE's) per second.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pythae_disentangle_speed.py --rounds 5
    .venv/bin/python benchmarks/pythae_disentangle_speed.py --rounds 1 --steps 3 --warmup 1 \\
        --out /tmp/speed.json                                          # a check, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

PYTHAE = "/work/pythae-venv/bin/python"
HIDDEN = (32, 64)
LATENT = 10
DISC = (5, 1000)  # pythae's default discriminator: hidden layers, units


def pythae_step_fn(model_name: str, images: np.ndarray, batch: int, sampling: str):
    """(step(), n_images_per_step) for pythae's model on ``images`` (N, 1, H, W) uint8."""
    import torch.nn.functional as F  # noqa: F401
    from pythae.models import BetaTCVAE, BetaTCVAEConfig, FactorVAE, FactorVAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    c, h, w = images.shape[1:]
    sides = [h]
    for _ in HIDDEN:
        sides.append((sides[-1] + 1) // 2)

    class Encoder(BaseEncoder):
        def __init__(self) -> None:
            BaseEncoder.__init__(self)
            layers, c_in = [], c
            for c_out in HIDDEN:
                layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU()]
                c_in = c_out
            self.body = nn.Sequential(*layers, nn.Flatten())
            self.head = nn.Linear(c_in * sides[-1] ** 2, 2 * LATENT)

        def forward(self, x):
            mu, logvar = self.head(self.body(x)).chunk(2, dim=-1)
            return ModelOutput(embedding=mu, log_covariance=logvar)

    class Decoder(BaseDecoder):
        def __init__(self) -> None:
            BaseDecoder.__init__(self)
            rev = list(reversed(HIDDEN))
            layers = [nn.Linear(LATENT, rev[0] * sides[-1] ** 2), nn.ReLU(),
                      nn.Unflatten(1, (rev[0], sides[-1], sides[-1]))]  # fmt: skip
            for i, c_in in enumerate(rev):
                last = i == len(rev) - 1
                c_out = c if last else rev[i + 1]
                pad = sides[-2 - i] - (2 * sides[-1 - i] - 1)
                layers.append(nn.ConvTranspose2d(c_in, c_out, 3, 2, 1, output_padding=pad))
                if not last:
                    layers.append(nn.ReLU())
            self.body = nn.Sequential(*layers)

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.body(z)))

    shape = (c, h, w)
    if model_name == "btcvae":
        mss = sampling == "mss"
        cfg = BetaTCVAEConfig(input_dim=shape, latent_dim=LATENT, reconstruction_loss="bce",
                              alpha=1.0, beta=6.0, gamma=1.0, use_mss=mss)  # fmt: skip
        model = BetaTCVAE(cfg, encoder=Encoder(), decoder=Decoder())
    else:
        cfg = FactorVAEConfig(input_dim=shape, latent_dim=LATENT, reconstruction_loss="bce",
                              gamma=35.0)  # fmt: skip
        model = FactorVAE(cfg, encoder=Encoder(), decoder=Decoder())
    data = torch.from_numpy(images).float() / 255.0
    n = len(data)
    model.train()
    if model_name == "btcvae":
        opt = torch.optim.Adam(model.parameters(), lr=5e-4)

        def step(x):  # pythae BaseTrainer.train_step's body
            out = model({"data": x}, epoch=1, dataset_size=n, uses_ddp=False)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
    else:
        ae_params = [p for name, p in model.named_parameters() if "discriminator" not in name]
        ae_opt = torch.optim.Adam(ae_params, lr=5e-4)
        d_opt = torch.optim.Adam(model.discriminator.parameters(), lr=1e-4, betas=(0.5, 0.9))

        def step(x):  # pythae AdversarialTrainer._optimizers_step
            out = model({"data": x}, epoch=1, dataset_size=n, uses_ddp=False)
            ae_opt.zero_grad()
            out.autoencoder_loss.backward(retain_graph=True)
            d_opt.zero_grad()
            out.discriminator_loss.backward()
            ae_opt.step()
            d_opt.step()

    return step, data


def vaelab_step_fn(model_name: str, images_path: str, batch: int, sampling: str):
    from vaelab.config import Config, with_overrides
    from vaelab.data import load_dataset
    from vaelab.training.distributed import World
    from vaelab.training.loop import train_step
    from vaelab.training.session import build_session, check_config

    opts = {"objective": model_name, "dataset": "dsprites-small", "arch": "conv",
            "hidden": ",".join(map(str, HIDDEN)), "latent_dim": LATENT, "batch_size": batch,
            "lr": 5e-4, "progress": False, "report": False, "seed": 0}  # fmt: skip
    if model_name == "btcvae":
        opts.update(tc_beta=6.0, tc_sampling=sampling)
    else:
        opts.update(factor_gamma=35.0, disc_layers=DISC[0], disc_hidden=DISC[1])
    config = check_config(with_overrides(Config(), opts, "benchmark"))
    data = load_dataset("dsprites-small")
    s = build_session(config, data, World(device=torch.device("cpu")))
    perm = torch.randperm(len(s.train_x))

    def step(b):
        train_step(s, *s.batch(perm, b))

    return step, s.steps_per_epoch


def worker(args: argparse.Namespace) -> None:
    """One measurement in this process: warm-up steps, then ``steps`` timed ones."""
    torch.manual_seed(0)
    if args.side == "pythae":
        step, data = pythae_step_fn(args.model, np.load(args.images), args.batch, args.sampling)
        g = torch.Generator().manual_seed(0)
        batches = [data[torch.randint(len(data), (args.batch,), generator=g)]
                   for _ in range(args.warmup + args.steps)]  # fmt: skip
        for x in batches[: args.warmup]:
            step(x)
        t0 = time.perf_counter()
        for x in batches[args.warmup :]:
            step(x)
    else:
        step, per_epoch = vaelab_step_fn(args.model, args.images, args.batch, args.sampling)
        for b in range(args.warmup):
            step(b % per_epoch)
        t0 = time.perf_counter()
        for b in range(args.warmup, args.warmup + args.steps):
            step(b % per_epoch)
    seconds = time.perf_counter() - t0
    print(json.dumps({"images_per_s": args.steps * args.batch / seconds, "seconds": seconds}))


def measure(side: str, model: str, args: argparse.Namespace, images: str) -> float:
    """Images per second the side's VAE learns from (the batch, or its half under
    ``--half-batch``, where pythae's step gives its VAE half and vaelab runs on half)."""
    python = PYTHAE if side == "pythae" else sys.executable
    batch = args.batch // 2 if args.half_batch and side == "vaelab" else args.batch
    cmd = [python, __file__, "--worker", "--side", side, "--model", model, "--images", images,
           "--batch", str(batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--sampling", args.sampling]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    if side == "pythae":  # pythae's interpreter must not see vaelab's packages
        env.pop("PYTHONPATH", None)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{side} {model} failed:\n{out.stderr[-3000:]}")
    per_s = json.loads(out.stdout.strip().splitlines()[-1])["images_per_s"]
    return per_s / 2 if args.half_batch and side == "pythae" else per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--side", choices=("vaelab", "pythae"), help=argparse.SUPPRESS)
    parser.add_argument("--model", default="btcvae", help=argparse.SUPPRESS)
    parser.add_argument("--images", help=argparse.SUPPRESS)
    parser.add_argument("--models", default="btcvae,factorvae")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--half-batch",
        action="store_true",
        help="like for like: vaelab on batch/2, the VAEs' images per second",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sampling", default="mss", help="beta-TCVAE's log q(z) estimator")
    parser.add_argument("--out", default="benchmarks/results/pythae_disentangle_speed.json")
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    from vaelab.data import load_dataset

    images = Path(args.out).with_suffix(".images.npy")
    images.parent.mkdir(parents=True, exist_ok=True)
    np.save(images, load_dataset("dsprites-small").train_x.numpy())
    result = {"batch": args.batch, "steps": args.steps, "warmup": args.warmup,
              "threads": args.threads, "rounds": args.rounds, "half_batch": args.half_batch,
              "sampling": args.sampling,
              "disc": {"layers": DISC[0], "hidden": DISC[1]}, "models": {}}  # fmt: skip
    try:
        for model in args.models.split(","):
            rows = []
            for r in range(args.rounds):
                order = ("vaelab", "pythae") if r % 2 == 0 else ("pythae", "vaelab")
                got = {side: measure(side, model, args, str(images)) for side in order}
                rows.append(got)
                print(f"{model} round {r + 1}: vaelab {got['vaelab']:.0f} img/s, pythae "
                      f"{got['pythae']:.0f} img/s, ratio {got['vaelab'] / got['pythae']:.2f}",
                      flush=True)  # fmt: skip
            ratios = [g["vaelab"] / g["pythae"] for g in rows]
            result["models"][model] = {
                "rounds": rows, "ratio_median": statistics.median(ratios),
                "ratio_min": min(ratios), "ratio_max": max(ratios),
            }  # fmt: skip
    finally:
        images.unlink(missing_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
