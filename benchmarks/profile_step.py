"""Where a training step's time goes: vaelab's step against the minimal loop's, op by op.

For each case (the same two as cli_epoch.py: the reference MLP VAE on Fashion-MNIST, the
conv VAE ``--hidden 32,64 --latent-dim 16`` on mnist-5k) it builds vaelab's own step (the
model, objective and fused-Adam :class:`~vaelab.training.loop.Stepper` that ``vaelab train``
builds, fed batches exactly as fit() prepares them) and the hand-written step of
benchmarks/cli_epoch.py, and reports for each:

- CPU seconds per step, from ``time.thread_time`` on one thread (not wall time: a process
  that other jobs preempt keeps its CPU time, so this survives a shared machine far better);
- torch.profiler's self CPU time split into the *irreducible* kernels (GEMMs: addmm, mm,
  bmm; convolutions forward and backward) that any loop with these layers runs, the
  optimizer, every other aten op, and what is left of the step outside any op (Python,
  dispatch, autograd bookkeeping);
- counts per step: aten ops called, tensors allocated (aten::empty*), host syncs
  (aten::_local_scalar_dense, i.e. ``.item()``/``bool()``/``float()`` of a tensor).

From the minimal step's irreducible share s, no loop that uses the same kernels can be
more than 1/s times faster than the minimal loop (Amdahl: cutting everything else leaves s):
the bound vaelab's step is held to, unless it uses faster kernels for the same layers.

    .venv/bin/python benchmarks/profile_step.py                    # both cases, 1 thread
    .venv/bin/python benchmarks/profile_step.py --cases mlp --steps 100 --threads 2

Writes benchmarks/results/profile_step.json (``--out`` to change).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli_epoch import minimal_bodies, minimal_step  # the minimal loop's own step

CASES = {
    "mlp": {"dataset": "fashion-mnist", "overrides": {}},
    "conv": {
        "dataset": "mnist-5k",
        "overrides": {"arch": "conv", "hidden": "32,64", "latent_dim": 16},
    },
}
BATCH = 128

# Self CPU time of these ops is the layers' arithmetic: the same in any loop with these layers.
GEMM = {"aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm", "aten::addmv", "aten::mv"}
CONV = {
    "aten::mkldnn_convolution", "aten::convolution_backward", "aten::_slow_conv2d_forward",
    "aten::_slow_conv2d_backward", "aten::slow_conv_transpose2d",
    "aten::mkldnn_convolution_backward", "aten::_nnpack_spatial_convolution",
    # oneDNN's transposed convolution is called from inside aten::_convolution (no op of its
    # own), so its time is that op's self time; for plain convolutions that is ~10 us.
    "aten::_convolution",
}  # fmt: skip
ALLOC = {"aten::empty", "aten::empty_strided", "aten::empty_like", "aten::zeros", "aten::ones"}
SYNC = {"aten::_local_scalar_dense"}
STEP = "profile_step.step"


def _training_parts():
    """(Stepper, make_optimizer, beta_at): the objects ``vaelab train`` steps with."""
    from vaelab.training.schedule import beta_at
    from vaelab.training.step import Stepper, make_optimizer

    return Stepper, make_optimizer, beta_at


def vaelab_step(case: str, dataset: str | None = None):
    """(step function, ImageData) of vaelab's own training step for ``case``: the
    :class:`Stepper` that ``vaelab train`` builds, fed batches as fit() prepares them."""
    import inspect

    from vaelab.config import Config, resolve, validate, with_overrides
    from vaelab.data import dataset_for
    from vaelab.data.prepare import epoch_permutation, prepare
    from vaelab.training.load import build_run_model

    Stepper, make_optimizer, beta_at = _training_parts()
    spec = CASES[case]
    options = {"dataset": dataset or spec["dataset"], **spec["overrides"]}
    config = with_overrides(Config(), options, "profile_step")
    config = validate(resolve(config))
    data = dataset_for(config)
    torch.manual_seed(0)
    model = build_run_model(config.model, data.image_shape)
    cpu = torch.device("cpu")
    takes_device = len(inspect.signature(make_optimizer).parameters) > 2
    made = make_optimizer(model, config, cpu) if takes_device else make_optimizer(model, config)
    optimizer = made[0] if isinstance(made, tuple) else made  # (optimizer, scheduler) before
    stepper = Stepper(model, optimizer, config, cpu)
    model.train()
    train_x, n = data.train_x, len(data.train_x)
    perm = epoch_permutation(n, 0, 0, torch.device("cpu"))
    steps = n // BATCH
    sums = torch.zeros(4)
    state = {"b": 0}

    def step() -> None:  # the body of fit()'s batch loop, minus progress and checkpoints
        b = state["b"] % steps
        state["b"] += 1
        idx = perm[b * BATCH : (b + 1) * BATCH]
        x = prepare(train_x.index_select(0, idx), False)
        ok, loss, stats = stepper(x, beta_at(config, state["b"], steps), None, 1.0)
        if ok:
            sums.add_(torch.stack([loss.detach(), stats["bound"], stats["recon"], stats["kl"]]))

    return step, data


def reference_step(case: str, data):
    """The minimal loop's step (benchmarks/cli_epoch.py) on the same images."""
    torch.manual_seed(0)
    enc, dec = minimal_bodies(CASES[case]["overrides"].get("arch", "mlp"), data.image_shape)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3)
    train_x = data.train_x.float().div_(255)
    perm = torch.randperm(len(train_x))
    steps = len(train_x) // BATCH
    state = {"b": 0}

    def step() -> None:
        b = state["b"] % steps
        state["b"] += 1
        minimal_step(enc, dec, opt, train_x[perm[b * BATCH : (b + 1) * BATCH]])

    return step


def cpu_seconds(step, n: int) -> float:
    """CPU seconds of this thread per step over ``n`` steps (one torch thread)."""
    t0 = time.thread_time()
    for _ in range(n):
        step()
    return (time.thread_time() - t0) / n


def breakdown(step, n: int) -> dict:
    """Profile ``n`` steps: self CPU microseconds per step by category, and counts per step.

    Every step runs the same sequence of ops, so the i-th op of each step is the same call;
    each op's time is its minimum over the ``n`` steps (and the time outside ops the
    step's minimum too). A call that another process preempted takes longer, never
    shorter, so the minimum is what the op costs on a quiet core: shares that hold on a
    shared machine, where sums or medians of wall-clock op times do not."""
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            with record_function(STEP):
                step()
    steps: dict[int, list] = {}
    walls: dict[int, float] = {}
    for e in prof.events():
        if e.name == STEP:
            walls[e.id] = e.cpu_time_total
            continue
        root = _root(e)
        if root is not None:
            steps.setdefault(root.id, []).append(e)
    sequences = [sorted(v, key=lambda e: (e.time_range.start, -e.time_range.end)) for v in
                 steps.values()]  # fmt: skip
    length = min(len(q) for q in sequences)
    sequences = [q for q in sequences if len(q) == length]  # identical steps only
    names = ("gemm", "conv", "optimizer", "other_ops")
    per = dict.fromkeys(names, 0.0)
    ops: dict[str, float] = {}
    counts = {"aten_ops": 0, "allocations": 0, "host_syncs": 0}
    for i, e in enumerate(sequences[0]):
        self_us = min(q[i].self_cpu_time_total for q in sequences)
        if e.name.startswith("aten::"):
            if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"):
                counts["aten_ops"] += 1  # top-level only: an op inside another is its part
            counts["allocations"] += e.name in ALLOC
            counts["host_syncs"] += e.name in SYNC
        ops[e.name] = ops.get(e.name, 0.0) + self_us
        kernel = _kernel(e)  # an op called inside a convolution or GEMM is part of it
        if kernel is not None:
            per[kernel] += self_us
        elif _under(e, "Optimizer.step"):
            per["optimizer"] += self_us
        else:
            per["other_ops"] += self_us
    inside = {
        root: sum(e.self_cpu_time_total for e in q) for root, q in steps.items()
    }  # fmt: skip
    per["outside_ops"] = max(0.0, min(walls[r] - inside[r] for r in inside))
    total = sum(per.values())
    top = sorted(ops.items(), key=lambda kv: -kv[1])[:20]
    return {
        "us_per_step": total,
        "us_by_category": per,
        "share_by_category": {k: v / total for k, v in per.items()},
        "irreducible_share": (per["gemm"] + per["conv"]) / total,
        "counts_per_step": counts,
        "top_ops_us_per_step": dict(top),
        "steps_aligned": len(sequences),
    }


def _root(event):
    """The step (record_function) an event ran in, or None."""
    while event is not None and event.name != STEP:
        event = event.cpu_parent
    return event


def _kernel(event) -> str | None:
    """ "conv" or "gemm" if ``event`` is such a kernel or runs inside one (the native
    transposed convolution's per-image selects and GEMMs are its own), else None."""
    while event is not None:
        if event.name in CONV:
            return "conv"
        if event.name in GEMM:
            return "gemm"
        event = event.cpu_parent
    return None


def _under(event, prefix: str) -> bool:
    while event is not None:
        if event.name.startswith(prefix):
            return True
        event = event.cpu_parent
    return False


def run_case(
    case: str, warmup: int, steps: int, blocks: int, prof_steps: int, dataset: str | None
) -> dict:
    ours, data = vaelab_step(case, dataset)
    ref = reference_step(case, data)
    for _ in range(warmup):
        ours()
        ref()
    cpu = {"vaelab": [], "minimal": []}
    for _ in range(blocks):  # interleaved blocks: a slow spell hits both
        cpu["vaelab"].append(cpu_seconds(ours, steps))
        cpu["minimal"].append(cpu_seconds(ref, steps))
    med = {k: statistics.median(v) for k, v in cpu.items()}
    prof = {"vaelab": breakdown(ours, prof_steps), "minimal": breakdown(ref, prof_steps)}
    s = prof["minimal"]["irreducible_share"]
    return {
        "cpu_ms_per_step": {k: 1e3 * v for k, v in med.items()},
        "cpu_ms_per_step_blocks": {k: [1e3 * x for x in v] for k, v in cpu.items()},
        "ratio_minimal_over_vaelab_cpu": med["minimal"] / med["vaelab"],
        "max_speedup_over_minimal": 1.0 / s,
        "profile": prof,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="mlp,conv", help=f"comma-separated: {', '.join(CASES)}")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps of each first")
    parser.add_argument("--steps", type=int, default=30, help="steps per CPU-time block")
    parser.add_argument("--blocks", type=int, default=5, help="interleaved CPU-time blocks")
    parser.add_argument("--profile-steps", type=int, default=60, help="steps under the profiler")
    parser.add_argument(
        "--quick", action="store_true", help="check that it runs: digits, a few steps"
    )
    parser.add_argument(
        "--out", help="JSON path (default: results/profile_step.json; --quick: a temporary file)"
    )
    args = parser.parse_args()
    dataset = "digits" if args.quick else None
    if args.quick:
        args.warmup, args.steps, args.blocks, args.profile_steps = 1, 2, 1, 3
    torch.set_num_threads(args.threads)
    from provenance import provenance, save_json  # benchmarks/provenance.py

    result = {**provenance(), "threads": args.threads, "batch_size": BATCH, "quick": args.quick,
              "cases": {}}  # fmt: skip
    for case in [c for c in args.cases.split(",") if c]:
        r = run_case(case, args.warmup, args.steps, args.blocks, args.profile_steps, dataset)
        result["cases"][case] = r
        print(f"\n{case}: CPU ms/step vaelab {r['cpu_ms_per_step']['vaelab']:.2f}, minimal "
              f"{r['cpu_ms_per_step']['minimal']:.2f} (minimal/vaelab "
              f"{r['ratio_minimal_over_vaelab_cpu']:.2f}); max speed-up of any loop with these "
              f"kernels over the minimal one: {r['max_speedup_over_minimal']:.2f}x")  # fmt: skip
        heads = r["profile"]["vaelab"]["share_by_category"]
        print(f"{'':<10}{'us/step':>9}" + "".join(f"{k:>12}" for k in heads)
              + f"{'ops':>6}{'allocs':>7}{'syncs':>6}")  # fmt: skip
        for side, p in r["profile"].items():
            c = p["counts_per_step"]
            shares = "".join(f"{v:>12.1%}" for v in p["share_by_category"].values())
            print(f"{side:<10}{p['us_per_step']:>9.0f}{shares}{c['aten_ops']:>6}"
                  f"{c['allocations']:>7}{c['host_syncs']:>6}")  # fmt: skip
        for side, p in r["profile"].items():
            print(f"  top ops ({side}): " + ", ".join(
                f"{k.removeprefix('aten::')} {v:.0f}" for k, v in
                list(p["top_ops_us_per_step"].items())[:8]))  # fmt: skip
    if args.out:
        out = Path(args.out)
    elif args.quick:
        out = Path(tempfile.gettempdir()) / "profile_step_quick.json"
    else:
        out = Path(__file__).resolve().parent / "results" / "profile_step.json"
    save_json(out, result)


if __name__ == "__main__":
    main()
