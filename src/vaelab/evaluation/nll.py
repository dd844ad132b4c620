"""Test-set bounds and the importance-sampled log-likelihood.

    log p(x) ~= log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x),   z_k ~ q(z|x)

is a stochastic lower bound that tightens as K grows (it is the IWAE bound; the
estimator is consistent). NLL = -log p(x) is reported in nats per image and in
bits per dimension, NLL / (D ln 2) with D = C*H*W, with its standard error across
images (the spread of per-image values / sqrt(N)). Images are processed in batches
and the K samples in chunks, so memory stays bounded whatever K is.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
from typing import Any

import torch
from tqdm import tqdm

from vaelab.data.prepare import to_unit
from vaelab.evaluation.resume import Progress
from vaelab.objectives import logmeanexp
from vaelab.training.bound import test_bound  # the ELBO part of evaluate_model


def _batches(x: torch.Tensor, batch_size: int):
    for start in range(0, len(x), batch_size):
        yield x[start : start + batch_size]


@torch.inference_mode()
def log_likelihood(
    model: torch.nn.Module,
    x: torch.Tensor,
    samples: int = 1000,
    batch_size: int = 16,
    chunk: int = 256,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Per-image importance-sampled log p(x), ``(N,)`` float64, for uint8 images ``x``.

    Each image gets ``samples`` draws from q(z|x), taken ``chunk`` at a time
    (``model.log_weights``); the log weights of all chunks are combined with one logsumexp.
    ``progress`` (:mod:`vaelab.evaluation.resume`) starts after the batches it holds and
    records each finished one.
    """
    was_training = model.training
    model.eval()
    param = next(model.parameters())
    out = list(progress.log_px) if progress is not None else []
    first = sum(len(t) for t in out)
    bar = tqdm(  # a terminal only, as in training: K=1000 on 10,000 images takes minutes
        _batches(x[first:], batch_size), desc=f"importance sampling, K={samples}",
        unit="batch", total=-(-(len(x) - first) // batch_size),
        disable=not sys.stderr.isatty(), leave=False, dynamic_ncols=True,
    )  # fmt: skip
    try:
        for xb in bar:
            xf = to_unit(xb.to(param.device), param.dtype)
            log_w = [model.log_weights(xf, min(chunk, samples - start))
                     for start in range(0, samples, chunk)]  # fmt: skip
            out.append(logmeanexp(torch.cat(log_w).double(), 0).cpu())
            if progress is not None:
                progress.batch_done(out[-1])
    finally:
        bar.close()
        model.train(was_training)
    return torch.cat(out)


def summarize_nll(log_px: torch.Tensor, dims: int) -> dict[str, Any]:
    """Mean NLL in nats and bits/dim with standard errors, from per-image log p(x)."""
    nll = -log_px.double()
    n = len(nll)
    se = nll.std(unbiased=True).item() / math.sqrt(n) if n > 1 else float("nan")
    scale = 1.0 / (dims * math.log(2))
    return {
        "nll_nats": nll.mean().item(),
        "nll_nats_se": se,
        "bits_per_dim": nll.mean().item() * scale,
        "bits_per_dim_se": se * scale,
        "images": n,
    }


def images_fingerprint(x: torch.Tensor) -> str:
    """A short hash of the exact evaluated images (after binarization): two evaluations
    with the same fingerprint scored the same images, so their per-image values pair."""
    data = x.detach().cpu().contiguous()
    digest = hashlib.sha256(str((tuple(data.shape), str(data.dtype))).encode())
    digest.update(data.numpy().tobytes())
    return digest.hexdigest()[:16]


def paired_difference(log_px_a: list[float], log_px_b: list[float]) -> dict[str, float]:
    """Mean NLL of B minus A over the same images, with the paired standard error
    (std of the per-image differences / sqrt(N)): far smaller than either NLL's own SE
    when the models agree on which images are hard."""
    a = torch.as_tensor(log_px_a, dtype=torch.float64)
    b = torch.as_tensor(log_px_b, dtype=torch.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference: {len(a)} vs {len(b)} images")
    diff = a - b  # NLL_b - NLL_a = log p_a - log p_b
    n = len(diff)
    se = diff.std(unbiased=True).item() / math.sqrt(n) if n > 1 else float("nan")
    return {"nll_difference": diff.mean().item(), "nll_difference_se": se}


def nll_batching(model: torch.nn.Module, x: torch.Tensor, samples: int) -> tuple[int, int]:
    """(images per batch, samples per chunk) of :func:`evaluate_model` for images ``x``."""
    dims = math.prod(x.shape[1:])
    # ~4k decoded images per chunk (16 images x 256 samples): measured fastest on CPU
    # (6.5 s per 1000 images at K=1000 vs 10 s with 100k-row chunks that spill the cache),
    # and memory stays bounded whatever K is.
    chunk = min(samples, 256)
    # The same memory for larger images and wider decoder outputs (a dmol decoder emits
    # 40 values per sub-pixel): 4096 decoded images at 784 values each.
    width = dims * model.likelihood.n_params
    return max(1, 4096 * 784 // (chunk * max(width, 784))), chunk


def evaluate_model(
    model: torch.nn.Module, x: torch.Tensor, samples: int = 1000, batch_size: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:  # fmt: skip
    """ELBO terms and importance-sampled NLL of uint8 images ``x``, with timings.
    ``progress``: the saved part of an interrupted evaluation to go on from, and where to
    record this one's (its batch size is the one it was saved with)."""
    dims = math.prod(x.shape[1:])
    t0 = time.perf_counter()
    if progress is not None and progress.bound is not None:
        bound = progress.bound  # and the random state as it was after it
        progress.restore_random()
    else:
        bound = test_bound(model, x, samples=1)
        if progress is not None:
            progress.bound_done(bound)
    t1 = time.perf_counter()
    batch, chunk = nll_batching(model, x, samples)
    batch = batch_size or batch
    if progress is not None and progress.nll_done:
        log_px = torch.cat(progress.log_px)
        progress.restore_random()
    else:
        log_px = log_likelihood(model, x, samples, batch, chunk, progress)
        if progress is not None:
            progress.nll_finished()
    t2 = time.perf_counter()
    nll = summarize_nll(log_px, dims)
    return {
        # Per-image values (rounded to 1e-4 nats, far below any SE) let vaelab compare
        # give paired differences between models scored on the same images.
        "log_px_per_image": [round(v, 4) for v in log_px.tolist()],
        "images_fingerprint": images_fingerprint(x),
        "elbo": bound["elbo"],
        "recon": bound["recon"],
        "kl": bound["kl"],
        "negative_elbo": -bound["elbo"],
        **nll,
        "gap_nats": nll["nll_nats"] - (-bound["elbo"]),
        "samples": samples,
        "dims": dims,
        "seconds_bound": t1 - t0,
        "seconds_nll": t2 - t1,
    }
