"""Writes this folder with vaelab at commit cec2a17 (see README.md):

git archive cec2a17 src tests/conftest.py | tar -x -C OLD
PYTHONPATH=OLD/src python made_by.py OLD/tests RUN_FOLDER
"""

import sys

import torch

sys.path.insert(0, sys.argv[1])  # that commit's tests/, for small_config
from conftest import small_config
from vaelab.training import loop

torch.set_num_threads(1)
real, calls = loop.Stepper.__call__, {"n": 0}


def crashing(self, *args, **kwargs):
    calls["n"] += 1
    if calls["n"] == 33:  # 3 steps after the checkpoint at step 30
        raise KeyboardInterrupt
    return real(self, *args, **kwargs)


loop.Stepper.__call__ = crashing
cfg = small_config(hidden="16", epochs=2, lr=0.01, schedule="cosine", checkpoint_every=30)
try:
    loop.fit(cfg, sys.argv[2])
except KeyboardInterrupt:
    print("stopped at step 33; checkpoint at step 30")
