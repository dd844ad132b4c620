"""Training-step speed: vaelab's VQ-VAE against pythae's VQVAE with the same layers.

Both sides train on the same Fashion-MNIST images (28x28 grey, read from the IDX file),
batch ``--batch-size``, Adam 1e-3, the EMA codebook (pythae ``use_ema=True``), K codes of
dim D, and the same encoder/decoder bodies: vaelab's ``nn/vqnet.py`` grid bodies (stride-2
3x3 convs 32, 64, residual blocks at the 7x7 grid, 1x1 conv to D; mirrored), written
out again for pythae in plain torch below. vaelab's step is its real loss path (the
model's forward, the ``vq`` objective, backward, Adam); the likelihood is gaussian-fixed
(the MSE pythae uses). Each side runs in its own interpreter (pythae in
/work/pythae-venv), ``--rounds`` times interleaved (vaelab, pythae, vaelab, ...), each
timing ``--steps`` steps after ``--warmup``; the result is the median images/s of each
and their ratio, as JSON (``--json``). Timings need a quiet machine:

    OMP_NUM_THREADS=1 python benchmarks/pythae_vq_speed.py --rounds 5 --steps 100 \
        --threads 1 --json benchmarks/results/pythae_vq_speed.json
    python benchmarks/pythae_vq_speed.py --quick      # checks it runs (numbers meaningless)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

PYTHAE = "/work/pythae-venv/bin/python"
FASHION = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"

COMMON = r"""
import gzip, time, numpy as np, torch
from torch import nn
torch.set_num_threads(THREADS)
torch.manual_seed(0)
with gzip.open(FASHION) as f:
    raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
X = torch.from_numpy(raw[: BATCH * 8].copy()).float() / 255
def timed(step):
    for i in range(WARMUP):
        step(X[(i % 8) * BATCH : (i % 8 + 1) * BATCH])
    t0 = time.perf_counter()
    for i in range(STEPS):
        step(X[(i % 8) * BATCH : (i % 8 + 1) * BATCH])
    print(BATCH * STEPS / (time.perf_counter() - t0))
"""

VAELAB = r"""
from vaelab.config import Config, ModelConfig, TrainConfig
from vaelab.models import build_model
from vaelab.models.vqvae import VQOptions
from vaelab.objectives import build_objective
cfg = Config(model=ModelConfig(model="vqvae", arch="conv", hidden=(32, 64), blocks=BLOCKS,
             latent_dim=DIM, likelihood="gaussian-fixed",
             options=VQOptions(codes=CODES)),
             train=TrainConfig(objective="vq"))
model = build_model(cfg.model, (1, 28, 28))
objective = build_objective(cfg, model)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
def step(x):
    loss, _ = objective(model, x)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
timed(step)
"""

PYTHAE_SIDE = r"""
from pythae.models import VQVAE, VQVAEConfig
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder
class Res(nn.Module):  # vaelab.nn.resnet.ResBlock
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.act = nn.SiLU()
    def forward(self, x):
        return x + self.conv2(self.act(self.conv1(self.act(x))))
class Enc(BaseEncoder):  # vaelab.nn.vqnet.grid_encoder, conv, hidden 32,64
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
            *[Res(64) for _ in range(BLOCKS)], nn.SiLU(), nn.Conv2d(64, DIM, 1))
    def forward(self, x):
        return ModelOutput(embedding=self.net(x))
class Dec(BaseDecoder):  # vaelab.nn.vqnet.grid_decoder, 1 parameter per pixel
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(DIM, 64, 3, padding=1),
                                 *[Res(64) for _ in range(BLOCKS)],
                                 nn.ReLU(), nn.ConvTranspose2d(64, 32, 3, 2, 1, output_padding=1),
                                 nn.ReLU(), nn.ConvTranspose2d(32, 32, 3, 2, 1, output_padding=1),
                                 nn.ReLU(), nn.Conv2d(32, 1, 3, padding=1))
    def forward(self, z):
        return ModelOutput(reconstruction=self.net(z))
config = VQVAEConfig(input_dim=(1, 28, 28), latent_dim=DIM, num_embeddings=CODES, use_ema=True,
                     commitment_loss_factor=0.25)
model = VQVAE(config, encoder=Enc(), decoder=Dec())
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
def step(x):
    loss = model({"data": x}).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
timed(step)
"""


def run_side(python: str, body: str, a: argparse.Namespace, env: dict) -> float:
    consts = (
        f"THREADS={a.threads}\nBATCH={a.batch_size}\nSTEPS={a.steps}\nWARMUP={a.warmup}\n"
        f"DIM={a.dim}\nCODES={a.codes}\nBLOCKS={a.blocks}\nFASHION={FASHION!r}\n"
    )
    out = subprocess.run([python, "-c", consts + COMMON + body], env=env, check=True,
                         capture_output=True, text=True)  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--codes", type=int, default=128)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the result here")
    p.add_argument("--quick", action="store_true", help="2 rounds of 3 steps: a check it runs")
    a = p.parse_args()
    if a.quick:
        a.rounds, a.steps, a.warmup = 2, 3, 1
    src = str(Path(__file__).resolve().parent.parent / "src")
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    ours_env = {**env, "PYTHONPATH": src}
    theirs_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    ours, theirs = [], []
    for r in range(a.rounds):
        ours.append(run_side(sys.executable, VAELAB, a, ours_env))
        theirs.append(run_side(PYTHAE, PYTHAE_SIDE, a, theirs_env))
        print(
            f"round {r + 1}: vaelab {ours[-1]:.0f} img/s, pythae {theirs[-1]:.0f} img/s", flush=True
        )
    result = {
        "vaelab_images_per_s": statistics.median(ours), "pythae_images_per_s":
        statistics.median(theirs), "ratio": statistics.median(ours) / statistics.median(theirs),
        "rounds": {"vaelab": ours, "pythae": theirs}, "settings": vars(a),
    }  # fmt: skip
    print(json.dumps(result))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
