"""The pythae side of benchmarks/zoo_table.py; runs in pythae's own interpreter:

    /work/pythae-venv/bin/python benchmarks/zoo_pythae.py --data DIR/train.npy \
        --model WAE_MMD --config '{"kernel_choice": "imq"}' --epochs 10 --out DIR/pythae-WAE_MMD

Trains pythae's implementation of one family with vaelab's MLP bodies mirrored layer for
layer (encoder Flatten-Linear(784, 400)-ReLU-Linear(400, 2D or D, or D + 1 for SVAE: the
direction and the log concentration pythae's SVAE reads); decoder Linear(D, 400)-
ReLU-Linear(400, 784) then pythae's sigmoid), Adam, the same batch size and epochs, on the
same training images dynamically binarized each batch (pythae's trainer cannot: this is
its training step without its trainer's callbacks, and for the coupled-optimizer models
(PIWAE, RAE_L2) exactly pythae's CoupledOptimizerTrainer step: encoder_loss.backward,
decoder grads reset, decoder_loss.backward, both optimizers step). Writes the weights
under vaelab's parameter names (``weights.npz``, no pickle) and ``pythae.json`` (images/s
of the training steps). vaelab's side loads the weights and scores them with its own tools.
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

STOCHASTIC = {"VAE", "BetaVAE", "IWAE", "MIWAE", "PIWAE", "CIWAE", "INFOVAE_MMD", "VAMP",
              "VAE_IAF", "VAE_LinNF", "SVAE"}  # fmt: skip
COUPLED = {"PIWAE", "RAE_L2"}  # pythae trains these with two optimizers
CONFIG_NAMES = {"WAE_MMD": "WAE_MMD_Config", "INFOVAE_MMD": "INFOVAE_MMD_Config",
                "RAE_L2": "RAE_L2_Config", "RAE_GP": "RAE_GP_Config",
                "VAE_IAF": "VAE_IAF_Config", "VAE_LinNF": "VAE_LinNF_Config"}  # fmt: skip


class Encoder(BaseEncoder):
    def __init__(self, dim: int, hidden: int, latent: int, stochastic: bool,
                 spherical: bool = False) -> None:  # fmt: skip
        super().__init__()
        # SVAE: D + 1 outputs, the direction and the log concentration (vaelab's svae layout)
        out = latent + 1 if spherical else 2 * latent if stochastic else latent
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, out))  # fmt: skip
        self.latent, self.stochastic, self.spherical = latent, stochastic, spherical

    def forward(self, x):
        h = self.net(x)
        if self.spherical:  # pythae's SVAE reads (embedding, log_concentration)
            return ModelOutput(embedding=h[:, :-1], log_concentration=h[:, -1:])
        if self.stochastic:
            mu, logvar = h.chunk(2, -1)
            return ModelOutput(embedding=mu, log_covariance=logvar)
        return ModelOutput(embedding=h)


class Decoder(BaseDecoder):
    def __init__(self, dim: int, hidden: int, latent: int, shape) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.shape = shape

    def forward(self, z):
        return ModelOutput(reconstruction=torch.sigmoid(self.net(z)).reshape(-1, *self.shape))


def build(name: str, options: dict, shape, hidden: int, latent: int):
    dim = int(np.prod(shape))
    config_cls = getattr(pm, CONFIG_NAMES.get(name, f"{name}Config"))
    config = config_cls(input_dim=tuple(shape), latent_dim=latent, reconstruction_loss="bce",
                        **options)  # fmt: skip
    stochastic = name in STOCHASTIC
    encoder = Encoder(dim, hidden, latent, stochastic, spherical=name == "SVAE")
    return getattr(pm, name)(config, encoder, Decoder(dim, hidden, latent, shape))


def make_step(model, name: str, lr: float, decoder_weight_decay: float, dataset_size: int):
    """pythae's trainer step for ``model`` as a function ``step(x, epoch) -> loss``: its
    BaseTrainer's (forward, loss backward, Adam step, ``loss.item()``), or for the coupled
    models (PIWAE, RAE_L2) its CoupledOptimizerTrainer._optimizers_step: encoder_loss
    backward, decoder grads reset, decoder_loss backward, both optimizers step."""
    if name in COUPLED:
        enc = torch.optim.Adam(model.encoder.parameters(), lr=lr)
        dec = torch.optim.Adam(model.decoder.parameters(), lr=lr,
                               weight_decay=decoder_weight_decay)  # fmt: skip

        def step(x: torch.Tensor, epoch: int) -> float:
            out = model({"data": x}, epoch=epoch, dataset_size=dataset_size, uses_ddp=False)
            enc.zero_grad()
            out.encoder_loss.backward(retain_graph=True)
            dec.zero_grad()
            out.decoder_loss.backward(retain_graph=True)
            enc.step()
            dec.step()
            return out.loss.item()

        return step
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def step(x: torch.Tensor, epoch: int) -> float:
        out = model({"data": x}, epoch=epoch, dataset_size=dataset_size, uses_ddp=False)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        return out.loss.item()

    return step


def vaelab_names(model) -> dict[str, np.ndarray]:
    """encoder.net.1 -> encoder.1 (vaelab's Sequential: Flatten, Linear, ReLU, Linear);
    decoder.net.0/2 -> decoder.0/2 (vaelab's decoder ends in an Unflatten, no weights)."""
    out = {}
    for k, v in model.state_dict().items():
        for part in ("encoder", "decoder"):
            if k.startswith(f"{part}.net."):
                out[f"{part}." + k[len(f"{part}.net.") :]] = v.detach().cpu().numpy()
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True, help="uint8 training images (N, 1, 28, 28), .npy")
    p.add_argument("--model", required=True)
    p.add_argument("--config", default="{}", help="JSON options of pythae's config class")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden", type=int, default=400)
    p.add_argument("--latent-dim", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--decoder-weight-decay", type=float, default=0.0)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    train = torch.from_numpy(np.load(a.data, allow_pickle=False))
    model = build(a.model, json.loads(a.config), tuple(train.shape[1:]), a.hidden, a.latent_dim)
    step = make_step(model, a.model, a.lr, a.decoder_weight_decay, len(train))
    g = torch.Generator().manual_seed(a.seed)
    seconds, images, losses = 0.0, 0, []
    for epoch in range(a.epochs):
        model.train()
        total = 0.0
        for idx in torch.randperm(len(train), generator=g).split(a.batch_size):
            t0 = time.perf_counter()
            x = torch.bernoulli(train[idx].float() / 255.0)
            loss = step(x, epoch)
            seconds += time.perf_counter() - t0
            images += len(idx)
            total += loss * len(idx)
        losses.append(total / len(train))
        model.update()
    folder = Path(a.out)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "weights.npz", **vaelab_names(model))
    info = {"model": a.model, "config": json.loads(a.config), "epochs": a.epochs,
            "batch_size": a.batch_size, "train_seconds": seconds, "images_per_s": images / seconds,
            "train_loss_per_epoch": losses, "torch": torch.__version__}  # fmt: skip
    (folder / "pythae.json").write_text(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
