"""The pythae side of benchmarks/zoo_latents.py; runs in pythae's own interpreter:

    /work/pythae-venv/bin/python benchmarks/zoo_latents_pythae.py --train DIR/train.npy \
        --test DIR/test.npy --model VAE_IAF --config '{"n_made_blocks": 2}' --epochs 10 \
        --out DIR/pythae-VAE_IAF

Trains pythae's VAE_IAF, VAE_LinNF or SVAE with vaelab's MLP bodies mirrored (encoder
Flatten-Linear(784, 400)-ReLU-Linear(400, 2D) (SVAE: D + 1, the direction and the log
concentration); decoder Linear(D, 400)-ReLU-Linear(400, 784) then pythae's sigmoid), Adam
1e-3, the same batch size and epochs, the training images dynamically binarized each batch
(pythae's own training step, without its trainer's callbacks). Then scores it on the test
images vaelab scores (``--test``: vaelab's fixed binarization of the first N test images):
test ELBO = -pythae's loss in eval mode (one posterior draw per image, as pythae computes
it), IS-NLL = minus pythae's own ``get_nll`` (which returns log p(x); K = ``--nll-samples``),
and the reconstruction MSE
of one posterior draw's decoded mean against the binarized image. Writes ``pythae.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pythae.models as pm
import torch
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder
from torch import nn


class Encoder(BaseEncoder):
    def __init__(self, dim: int, hidden: int, latent: int, spherical: bool) -> None:
        super().__init__()
        out = latent + 1 if spherical else 2 * latent
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, out))  # fmt: skip
        self.latent, self.spherical = latent, spherical

    def forward(self, x):
        h = self.net(x)
        if self.spherical:
            return ModelOutput(embedding=h[:, : self.latent], log_concentration=h[:, self.latent :])
        mu, logvar = h.chunk(2, -1)
        return ModelOutput(embedding=mu, log_covariance=logvar)


class Decoder(BaseDecoder):
    def __init__(self, dim: int, hidden: int, latent: int, shape) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.shape = shape

    def forward(self, z):
        return ModelOutput(reconstruction=torch.sigmoid(self.net(z)).reshape(-1, *self.shape))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--train", required=True, help="uint8 training images (N, 1, 28, 28), .npy")
    p.add_argument("--test", required=True, help="binarized uint8 test images (0/255), .npy")
    p.add_argument("--model", required=True, choices=["VAE_IAF", "VAE_LinNF", "SVAE"])
    p.add_argument("--config", default="{}", help="JSON options of pythae's config class")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden", type=int, default=400)
    p.add_argument("--latent-dim", type=int, default=20)
    p.add_argument("--nll-samples", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    train = torch.from_numpy(np.load(a.train, allow_pickle=False))
    test = torch.from_numpy(np.load(a.test, allow_pickle=False)).float() / 255.0
    shape = tuple(train.shape[1:])
    dim = int(np.prod(shape))
    config = getattr(pm, f"{a.model}_Config" if a.model != "SVAE" else "SVAEConfig")(
        input_dim=shape, latent_dim=a.latent_dim, reconstruction_loss="bce", **json.loads(a.config)
    )
    model = getattr(pm, a.model)(
        config, Encoder(dim, a.hidden, a.latent_dim, a.model == "SVAE"),
        Decoder(dim, a.hidden, a.latent_dim, shape),
    )  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    g = torch.Generator().manual_seed(a.seed)
    seconds, images, losses = 0.0, 0, []
    for epoch in range(a.epochs):
        model.train()
        total = 0.0
        for idx in torch.randperm(len(train), generator=g).split(a.batch_size):
            t0 = time.perf_counter()
            x = torch.bernoulli(train[idx].float() / 255.0)
            out = model({"data": x}, epoch=epoch, dataset_size=len(train), uses_ddp=False)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            seconds += time.perf_counter() - t0
            images += len(idx)
            total += float(out.loss) * len(idx)
        losses.append(total / len(train))
        model.update()
    model.eval()
    neg_elbo, sq = 0.0, 0.0
    with torch.no_grad():
        for xb in test.split(500):
            out = model({"data": xb}, epoch=a.epochs, dataset_size=len(train), uses_ddp=False)
            neg_elbo += float(out.loss) * len(xb)  # pythae's loss: mean over the batch
            sq += float((out.recon_x.reshape(len(xb), -1) - xb.flatten(1)).square().mean(1).sum())
    t0 = time.perf_counter()
    # get_nll returns the importance-sampled log p(x) (its docstring says NLL; the values
    # are log-likelihoods), so the NLL is its negative
    k = a.nll_samples
    log_px = float(np.mean(model.get_nll(test, n_samples=k, batch_size=k)))
    nll = -log_px
    info = {"model": a.model, "config": json.loads(a.config), "epochs": a.epochs,
            "batch_size": a.batch_size, "train_seconds": seconds, "images_per_s": images / seconds,
            "train_loss_per_epoch": losses, "test_images": len(test),
            "test_elbo": -neg_elbo / len(test), "nll_nats": nll, "get_nll_value": log_px,
            "nll_samples": a.nll_samples,
            "nll_seconds": time.perf_counter() - t0,
            "recon_mse_posterior_draw": sq / len(test), "torch": torch.__version__}  # fmt: skip
    folder = Path(a.out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pythae.json").write_text(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
