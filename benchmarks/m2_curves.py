"""M2's classifier during training: test accuracy vs step, and what drives it.

Trains M2 (the model and objective of ``vaelab train --model m2 --objective m2``, with
the same labelled stream from :func:`vaelab.training.labels.labelled_stream`, Adam, batches of
128) and every ``--every`` steps records, on the first ``--test`` test images:

- ``test_acc``: accuracy of argmax q(y|x) (what ``vaelab classify`` reports);
- ``gen_acc``: accuracy of the generative model's own posterior argmax_y L(x, y), the
  target the unlabelled term U(x) pulls q(y|x) towards;
- ``g_U`` and ``g_CE``: the gradient norms, over the classifier's parameters, of the
  batch's negative bound (L and U) and of the weighted class loss (alpha / N) * CE;
- ``ce``: the class loss on the step's labelled batch.

Evaluation runs under ``fork_rng``: it does not change the training draws. Prints rows
and saves JSON (benchmarks/results/<name>.json).

    python benchmarks/m2_curves.py --labels 100 --alpha-n 10 --name m2_curves-f100-a10
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from provenance import provenance, save_json  # benchmarks/provenance.py
from vaelab.config import Config, with_overrides
from vaelab.data import load_dataset
from vaelab.data.prepare import prepare, to_unit
from vaelab.models.cvae import CVAE
from vaelab.models.m2 import M2
from vaelab.objectives import build_objective
from vaelab.objectives import m2 as m2_objective
from vaelab.training.labels import labelled_stream, prepare_labels

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--train-images", type=int, default=20000)
    p.add_argument("--labels", type=int, default=100, help="labels per class")
    p.add_argument("--alpha-n", type=float, default=0.1, help="alpha as a multiple of N")
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--every", type=int, default=300)
    p.add_argument("--hidden", default="256")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--test", type=int, default=2000, help="first N test images")
    p.add_argument("--labelled-bound", type=float, default=0.0,
                   help="also add this weight times the labelled batch's mean -L(x, y) each "
                   "step (reimplementations' batch composition; 0: the paper's)")  # fmt: skip
    p.add_argument("--name", required=True, help="results/<name>.json")
    a = p.parse_args()

    torch.manual_seed(0)
    data = load_dataset(a.dataset)
    if a.train_images and a.train_images < len(data.train_x):  # benchmarks/semi_supervised.py's
        idx = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(0))
        idx = idx[: a.train_images]
        data = replace(data, train_x=data.train_x[idx].contiguous(), train_y=data.train_y[idx])
    n = len(data.train_x)
    options = {"dataset": a.dataset, "model": "m2", "objective": "m2", "hidden": a.hidden,
               "labels_per_class": a.labels, "alpha": a.alpha_n * n, "latent_dim": 50}  # fmt: skip
    cfg = with_overrides(Config(), options, "m2_curves")
    model = M2.from_config(cfg.model, data.image_shape)
    data = prepare_labels(model, cfg, data)
    (class_loss,) = build_objective(cfg, model, n).terms  # alpha / N x CE (the m2 objective's)
    stream = labelled_stream(model, cfg, data, torch.device("cpu"))
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    tx, ty = to_unit(data.test_x[: a.test]), data.test_y[: a.test]
    cls_params = list(model.classifier.parameters())

    def accuracies() -> dict[str, float]:
        model.eval()
        gpus = [tx.device] if tx.device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=gpus):
            q = model.class_logits(tx).argmax(-1)
            gen = CVAE.class_log_probs(model, tx).argmax(-1)  # softmax_y L(x, y)
        model.train()
        return {"test_acc": (q == ty).double().mean().item(),
                "gen_acc": (gen == ty).double().mean().item()}  # fmt: skip

    def grad_norm(loss: torch.Tensor) -> float:
        g = torch.autograd.grad(loss, cls_params, retain_graph=True, allow_unused=True)
        return torch.sqrt(sum((t * t).sum() for t in g if t is not None)).item()

    rows, step, t0 = [], 0, time.perf_counter()
    while step < a.steps:
        perm = torch.randperm(n)
        for s in range(0, n - 127, 128):
            idx = perm[s : s + 128]
            model.train()
            terms = model(prepare(data.train_x[idx], False), 1, y=data.train_y[idx])
            loss, _ = m2_objective(terms)
            weighted_ce, stats = class_loss(model, None, None, stream())
            loss, ce = loss + weighted_ce, stats["class_loss"]
            if a.labelled_bound:  # a labelled batch's L(x, y), weighted like the batch's
                xs, ys = stream()
                t = CVAE.forward(model, xs, 1, y=ys)
                loss = loss - a.labelled_bound * (t.log_px_z.mean(0) - t.kl_per_image()).mean()
            if step % a.every == 0:
                neg_bound = -(terms.log_px_z.mean(0) - terms.kl_per_image()).mean()
                row = {"step": step, **accuracies(), "g_U": grad_norm(neg_bound),
                       "g_CE": grad_norm(weighted_ce), "ce": ce.item(),
                       "seconds": time.perf_counter() - t0}  # fmt: skip
                print(json.dumps(row), flush=True)
                rows.append(row)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step >= a.steps:
                break
    rows.append({"step": step, **accuracies(), "seconds": time.perf_counter() - t0})
    print(json.dumps(rows[-1]))
    out = {"benchmark": "m2_curves", **vars(a), "train_images": n, "alpha": a.alpha_n * n,
           "rows": rows, **provenance()}  # fmt: skip
    save_json(RESULTS / f"{a.name}.json", out)


if __name__ == "__main__":
    main()
