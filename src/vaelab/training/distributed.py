"""Data-parallel training under ``torchrun``: one process per device, one model replica each.

``torchrun --nproc_per_node N -m vaelab train ...`` starts N processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment; :func:`setup` reads them, joins
the process group (NCCL on CUDA, gloo on CPU) and returns a :class:`World`. Without
those variables (or with ``WORLD_SIZE=1``) it returns the single-process world and
nothing below talks to another process.

The split of work, chosen so that N ranks compute the same update as one process:

* ``--batch-size B`` is the GLOBAL batch. Step ``b`` of an epoch takes images
  ``perm[b*B : (b+1)*B]`` of the epoch's permutation (a function of (seed, epoch), so
  every rank knows it without communicating) and rank r keeps every N-th of them,
  ``[r::N]``. B must be divisible by N.
* Each rank's loss is a mean over its own n_r images; DDP averages the gradients of
  the N ranks. Scaling rank r's loss by ``n_r * N / n`` (1 when the batch divides evenly;
  only the epoch's last, short batch is uneven) makes that average exactly the gradient
  of the mean over all n images, i.e. what one process computes with batch B.
* A step is skipped on every rank when any rank sees a non-finite loss or gradient
  (a rank that skipped alone would leave the others waiting in the all-reduce).
* Rank 0 alone writes the run folder; the others wait, and learn whether it worked
  (a failure there, a full disk say, stops every rank with a clear error).
* Reparameterization and dynamic-binarization noise come from each rank's own
  generator, seeded ``seed + rank``; the checkpoint keeps every rank's RNG state, so a
  resume under the same world size is exact.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as tdist

from vaelab.errors import VaelabError
from vaelab.training.bound import test_bound
from vaelab.training.folder import deterministic_kernels, resolve_device

T = TypeVar("T")


@dataclass
class World:
    """This process's place among the training processes (rank 0 of 1 when alone)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False  # we initialised the process group, so we tear it down

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the training step calls: a DDP wrapper when distributed."""
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        # Some parameters never get a gradient (a learned prior under --model ae), so DDP
        # must look for unused ones. (static_graph=True would skip that search, but it
        # broke the equality with one process in tests/test_distributed.py.)
        return DDP(model, device_ids=ids, find_unused_parameters=True)

    def shard(self, idx: torch.Tensor) -> tuple[torch.Tensor, float]:
        """This rank's share ``idx[rank::size]`` of a global batch and its loss scale
        ``n_r * size / n`` (see the module docstring)."""
        if not self.distributed:
            return idx, 1.0
        mine = idx[self.rank :: self.size]
        return mine, len(mine) * self.size / len(idx)

    def steps_per_epoch(self, n: int, batch_size: int) -> int:
        """Global batches per epoch; a last batch smaller than the world is dropped
        (some rank would get no image)."""
        return n // batch_size + (1 if n % batch_size >= self.size else 0)

    def all_true(self, flag: torch.Tensor) -> torch.Tensor:
        """Elementwise logical AND of a boolean tensor over ranks (one all-reduce)."""
        if not self.distributed:
            return flag
        t = flag.to(torch.float32).reshape(-1)
        tdist.all_reduce(t, op=tdist.ReduceOp.MIN)
        return (t > 0).reshape(flag.shape)

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Elementwise sum over ranks (a new tensor; float64 is kept)."""
        if not self.distributed:
            return t
        t = t.clone()
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return t

    def test_bound(self, model, test_x: torch.Tensor, samples: int) -> dict[str, float]:
        """The test-set bound of :func:`vaelab.training.bound.test_bound` over every rank's
        shard ``test_x``: per-image sums and image counts are all-reduced."""
        if not self.distributed:
            return test_bound(model, test_x, samples=samples)
        keys = ("elbo", "recon", "kl")
        sums = [0.0] * 4
        if len(test_x):
            part = test_bound(model, test_x, samples=samples)
            sums = [part[k] * len(test_x) for k in keys] + [float(len(test_x))]
        total = self.all_sum(torch.tensor(sums, dtype=torch.float64, device=self.device))
        return {k: (total[i] / total[3]).item() for i, k in enumerate(keys)}

    def gather_rng(self) -> dict[str, torch.Tensor]:
        """Every rank's torch (and CUDA) RNG state, as checkpoint tensors ``rng/.../<rank>``."""
        states = {"rng/torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            states["rng/cuda"] = torch.cuda.get_rng_state(self.device)
        if not self.distributed:
            return {}
        out = {}
        for key, state in states.items():
            local = state.to(self.device)
            parts = [torch.empty_like(local) for _ in range(self.size)]
            tdist.all_gather(parts, local)
            out.update({f"{key}/{r}": p.cpu() for r, p in enumerate(parts) if r > 0})
        return out

    def on_main(self, fn: Callable[[], T], what: str) -> T | None:
        """Run ``fn`` on rank 0 only; every rank returns once it is done, and every rank
        raises if it failed (rank 0 with its own error)."""
        result, error = None, None
        if self.is_main:
            try:
                result = fn()
            except OSError as exc:  # a full disk, a read-only folder: the user's to fix
                where = f" ({exc.filename})" if exc.filename else ""
                error = VaelabError(f"{what}: {exc.strerror or exc}{where}")
            except Exception as exc:  # re-raised below, after the others are told
                error = exc
        if not self.distributed:
            if error is not None:
                raise error
            return result
        flag = torch.tensor([0.0 if error else 1.0], device=self.device)
        tdist.broadcast(flag, src=0)
        if error is not None:
            raise error
        if flag.item() == 0:
            raise VaelabError(f"rank 0 failed while {what}; its error is in rank 0's output")
        return result

    def main_first(self, fn: Callable[[], T], what: str) -> T:
        """``fn`` on rank 0, then on the other ranks once it is done: a download or
        extraction into a shared cache happens once, and the others find it there (every
        rank at once would write the same files through the same names)."""
        result = self.on_main(fn, what)  # its broadcast is the barrier
        return result if self.is_main else fn()

    def close(self, finished: bool = False) -> None:
        """Leave the process group. DDP's reducer holds the group in reference cycles:
        collect it first, or gloo's threads outlive the group and abort the process at
        interpreter exit. ``finished`` (every rank trained to the end): wait for all
        ranks first, so none tears the group down while another still talks to it."""
        if self.owns_group and tdist.is_initialized():
            gc.collect()
            if finished:
                tdist.barrier()
            tdist.destroy_process_group()


def local_cuda(local: int) -> torch.device:
    """This process's GPU under torchrun: ``cuda:LOCAL_RANK`` when the process sees every
    GPU of the node, ``cuda:0`` when it sees exactly one (a launcher or cluster that sets
    CUDA_VISIBLE_DEVICES per process, where cuda:LOCAL_RANK does not exist)."""
    count = torch.cuda.device_count()
    if local < count:
        return torch.device("cuda", local)
    if count == 1:
        return torch.device("cuda", 0)
    raise VaelabError(
        f"--device cuda: LOCAL_RANK {local} but this process sees {count} GPUs "
        f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); start "
        "at most one process per visible GPU"
    )


def setup(device_name: str) -> World:
    """Join the ``torchrun`` process group if the environment names one.

    ``--device auto``/``cuda`` becomes this process's GPU (:func:`local_cuda`: one GPU per
    process, NCCL); ``cpu`` uses gloo.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(device=resolve_device(device_name))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if device.type == "cuda":
        if device.index not in (None, local) and device_name != "auto":
            raise VaelabError(
                f"--device {device_name}: under torchrun each process uses cuda:LOCAL_RANK; "
                "pass --device cuda"
            )
        device = local_cuda(local)
        torch.cuda.set_device(device)
    owns = not tdist.is_initialized()
    if owns:
        backend = "nccl" if device.type == "cuda" else "gloo"
        tdist.init_process_group(backend, timeout=timedelta(minutes=30))
    if tdist.get_world_size() != size or tdist.get_rank() != rank:
        raise VaelabError("torchrun environment and process group disagree on RANK/WORLD_SIZE")
    return World(rank=rank, size=size, local_rank=local, device=device, owns_group=owns)


def check_batch(world: World, batch_size: int) -> int:
    """Per-rank batch size; ``--batch-size`` is global and must split evenly."""
    if batch_size % world.size:
        raise VaelabError(
            f"--batch-size {batch_size}: the global batch must be divisible by the "
            f"{world.size} processes of torchrun"
        )
    return batch_size // world.size


@contextmanager
def joined(device_name: str, deterministic: bool = False) -> Iterator[World]:
    """:func:`setup`'s world for the duration of a ``with`` block, then :meth:`World.close`:
    after an error at once (another rank may be gone), else once every rank is done.
    ``deterministic``: deterministic kernels inside the block (:func:`deterministic_kernels`)."""
    with deterministic_kernels(deterministic):
        world = setup(device_name)
        try:
            yield world
        except BaseException:
            world.close()
            raise
        world.close(finished=True)
