"""Writes the run folders in this directory with vaelab at commit a75b601 (see README.md):

git archive a75b601 src tests/conftest.py | tar -x -C OLD
PYTHONPATH=OLD/src python made_by.py OLD/tests OUT_DIR

OUT_DIR/hvae: --model hvae --z1-dim 6 --z1-hidden 12, stopped at step 33 (checkpoint at 30).
OUT_DIR/m2: --model m2 --alpha 50 --labels-per-class 5 --num-classes 10, one whole epoch.
Each folder also gets sample.safetensors: vaelab.sample(run, n=4, seed=0)'s images.
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, sys.argv[1])  # that commit's tests/, for small_config
from conftest import small_config
from vaelab.api import load
from vaelab.training import loop, step

torch.set_num_threads(1)
out = Path(sys.argv[2])
real, calls = step.Stepper.__call__, {"n": 0}


def crashing(self, *args, **kwargs):
    calls["n"] += 1
    if calls["n"] == 33:  # 3 steps after the checkpoint at step 30
        raise KeyboardInterrupt
    return real(self, *args, **kwargs)


def samples(run: Path) -> None:
    model = load(run)
    torch.manual_seed(0)
    save_file({"images": model.sample(4).contiguous()}, str(run / "sample.safetensors"))


step.Stepper.__call__ = crashing
cfg = small_config(model="hvae", hidden="16", latent_dim=2, z1_dim=6, z1_hidden="12",
                   epochs=2, lr=0.01, checkpoint_every=30)  # fmt: skip
try:
    loop.fit(cfg, out / "hvae")
except KeyboardInterrupt:
    print("hvae: stopped at step 33; checkpoint at step 30")
step.Stepper.__call__ = real
samples(out / "hvae")
cfg = small_config(model="m2", hidden="16", latent_dim=2, epochs=1, alpha=50.0,
                   labels_per_class=5, num_classes=10)  # fmt: skip
loop.fit(cfg, out / "m2")
samples(out / "m2")
