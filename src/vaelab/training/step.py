"""The update of one batch: forward, objective, backward, finite check, skip, clip, step.

:class:`LossModule` is the model with its objective, ``(x, beta, y) -> (loss, stats)``, the
unit DDP wraps; :class:`Stepper` holds what every step reuses (the DDP-wrapped and possibly
compiled loss, autocast, the fp16 gradient scaler, the parameters) and applies one update.
:func:`vaelab.training.loop.train_step` is its one caller in training.
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext

import torch
from torch import nn

from vaelab.config import Config
from vaelab.errors import VaelabError
from vaelab.objectives import build_objective
from vaelab.training.distributed import World
from vaelab.training.labels import LabelledStream
from vaelab.training.options import compile_declined
from vaelab.training.stabilise import grad_norm


def make_optimizer(model: nn.Module, config: Config) -> torch.optim.Optimizer:
    """Adam with ``--lr`` and ``--weight-decay``; the training step sets each step's rate
    (``lr_at``), so there is no scheduler object."""
    t = config.train
    # Parameters with an optimizer of their own (FactorVAE's discriminator) are not Adam's.
    side = model.objective.side_parameters() if isinstance(model, LossModule) else set()
    params = [p for p in model.parameters() if id(p) not in side]
    # The fused kernel does Adam's five elementwise passes in one (about a third of an
    # MLP VAE's CPU step otherwise); it exists for float32 on CPU and CUDA.
    return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay, fused=True)


def grads_finite(params: list[torch.Tensor]) -> torch.Tensor:
    """A 0-d bool: every gradient is finite. One foreach pass (GradScaler's own check, with
    scale 1): about a fifth of the cost of a global norm, which needs a pass, a stack, and a
    second norm (measured: 305 vs 67 us per step of the reference MLP VAE on CPU)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.ones((), dtype=torch.bool)
    found = torch.zeros(1, device=grads[0].device)
    one = torch.ones(1, device=grads[0].device)
    torch._amp_foreach_non_finite_check_and_unscale_(grads, found, one)
    return found[0] == 0


class LossModule(nn.Module):
    """A model and its objective as one module, ``(x, beta, y) -> (loss, stats)``.

    This is what DDP wraps: its search for unused parameters starts from the forward's
    outputs, and a model's ``Terms`` may compute log p(z) and log q(z|x) only when the
    objective asks (a learned prior's parameters are reached only through them). Its
    parameters (the model's, then the objective's: a learned baseline) are what the
    optimizer steps. ``labelled``: M2's labelled images; in training mode each call feeds
    a batch of them to the objective's class loss.
    """

    def __init__(
        self, model: nn.Module, objective: nn.Module, samples: int,
        labelled: LabelledStream | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.model, self.objective, self.samples = model, objective, samples
        self.labelled = labelled

    def forward(self, x: torch.Tensor, beta: torch.Tensor, y: torch.Tensor | None = None):
        batch = self.labelled() if self.labelled is not None and self.training else None
        return self.objective(self.model, x, beta, y, self.samples, batch)


class Stepper:
    """The forward/backward/update of one batch, optionally under autocast/compile.

    ``model`` is the :class:`LossModule` (a bare model gets the objective of ``config``),
    wrapped in DDP under torchrun (whose forward does the gradient all-reduce bookkeeping).
    A step is applied only if the loss and every gradient are finite (on every rank);
    otherwise it is skipped.
    """

    def __init__(
        self, model, optimizer, config: Config, device: torch.device, world: World | None = None
    ) -> None:
        t = config.train
        self.optimizer, self.config = optimizer, config
        self.world = world or World(device=device)
        if not isinstance(model, LossModule):
            model = LossModule(model, build_objective(config, model), t.samples)
            if any(True for _ in model.objective.parameters()):  # not in the optimizer
                raise TypeError("Stepper: build the LossModule (and its optimizer) first")
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.unit = model
        # The objective's own optimizers (FactorVAE's discriminator): stepped after the
        # model's, from the same backward pass, under the same finite check.
        self.side = model.objective.side_optimizers()
        self.model = self.world.wrap(model)
        self.skip_reason = ""  # why the last skipped step was skipped: non-finite | grad-norm
        self.norms = torch.zeros(3, device=device)  # sum, max, count of measured grad norms
        # beta as a device tensor filled in place: torch.tensor(beta, device=...) each step
        # was a blocking host-to-device copy; a Python float would recompile --compile's
        # graph at every new value of a warm-up.
        self.beta = torch.zeros((), device=device)
        self.autocast, self.scaler = mixed_precision(device, t.precision)
        # dynamic=False: an epoch's smaller last batch gets its own static graph. With automatic
        # dynamic shapes it would replace the full-batch graph by a dynamic-shape one that
        # ran 2.6x slower than eager on CPU (measured: epoch 2 of the reference VAE).
        declined = compile_declined(model.model, device) if t.compile else None
        if declined:
            warnings.warn(f"--compile: declined, {declined}; training eager", stacklevel=2)
        compiled = t.compile and not declined
        self.loss_fn = torch.compile(self.model, dynamic=False) if compiled else self.model

    def __call__(
        self, x: torch.Tensor, beta: float, y: torch.Tensor | None = None, scale: float = 1.0
    ) -> tuple[bool, torch.Tensor, dict]:
        """One update; ``y`` (labels, -1 where hidden) goes to models with ``uses_labels``;
        ``scale`` multiplies the loss that is differentiated (an uneven DDP shard's weight)."""
        self.beta.fill_(beta)  # a scalar kernel argument: no host sync
        with self.autocast:
            loss, stats = self.loss_fn(x, self.beta, y)
        # Backward even a non-finite loss: under DDP every rank must join the all-reduce.
        scaled = loss * scale if scale != 1.0 else loss
        (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        if self.scaler:
            for opt in (self.optimizer, *self.side):
                self.scaler.unscale_(opt)
        clip, skip = self.config.train.clip_grad, self.config.train.skip_threshold
        norm = None
        if clip is not None or skip is not None:
            norm = grad_norm(self.params, clip)
            finite = torch.isfinite(loss) & torch.isfinite(norm)
        else:
            finite = torch.isfinite(loss) & grads_finite(self.params)
        # One host sync decides, for every rank at once: a NaN/inf loss or gradient anywhere
        # skips the step, and with --skip-threshold (the norm is the same on every rank after
        # DDP's all-reduce) so does a finite step whose gradient norm is too large. Both
        # flags travel in one all-reduce and come back to the host in one read.
        within = finite if skip is None else finite & (norm <= skip)
        flags = self.world.all_true(torch.stack([finite, within])).to(torch.uint8)
        code = int((flags[0] * 2 + flags[1]).item())  # the step's one host sync
        all_finite, keep = code >= 2, code % 2 == 1
        if all_finite and norm is not None:
            self.norms[0] += norm
            self.norms[1] = torch.maximum(self.norms[1], norm)
            self.norms[2] += 1
        if not keep:
            self.skip_reason = "grad-norm" if all_finite else "non-finite"
            for opt in (self.optimizer, *self.side):
                opt.zero_grad(set_to_none=True)
            if self.scaler:
                self.scaler.update()
            return False, loss, stats
        self.skip_reason = ""
        side = self.rebound_side()
        for opt in (self.optimizer, *side):
            if self.scaler:
                self.scaler.step(opt)
            else:
                opt.step()
        if self.scaler:
            self.scaler.update()
        for opt in (self.optimizer, *side):
            opt.zero_grad(set_to_none=True)
        return True, loss, stats

    def rebound_side(self) -> list[torch.optim.Optimizer]:
        """The side optimizers, their state re-bound to the objective's buffers (a resume
        loads new values into them; a move to another device replaces them)."""
        return self.unit.objective.side_optimizers() if self.side else []


# Autocast on CPU too (bf16; fp16 with torch.amp.GradScaler("cpu")): off for users, whose
# CPU runs train in fp32 (--precision is a CUDA option); tests switch it on to exercise the
# CUDA code paths (autocast, the loss scaler and its checkpoint) on a machine without a GPU.
CPU_AMP = False


def mixed_precision(device: torch.device, precision: str):
    """(autocast context, fp16 gradient scaler or None) for ``--precision`` on ``device``."""
    amp = precision != "fp32" and (device.type == "cuda" or CPU_AMP)
    if precision != "fp32" and not amp:
        warnings.warn(f"--precision {precision} needs CUDA; training in fp32", stacklevel=3)
    if not amp:
        return nullcontext(), None
    # including_emulation=False: before Ampere torch emulates bf16 (slowly); not "support".
    cuda_bf16 = precision == "bf16" and device.type == "cuda"
    if cuda_bf16 and not torch.cuda.is_bf16_supported(including_emulation=False):
        name = torch.cuda.get_device_name(device)
        raise VaelabError(
            f"--precision bf16: {name} has no bfloat16 support (it needs compute capability"
            " 8.0, Ampere, or newer); use --precision fp16 or fp32"
        )
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    return torch.autocast(device.type, dtype=dtype), scaler


class LossReadout:
    """The progress bar's loss without a host sync: a step's loss is copied to pinned host
    memory without blocking (``non_blocking``; a CUDA event marks its arrival), and the bar
    shows the latest copy that has landed, a few steps old. ``.item()`` would wait for
    the GPU to finish every queued step (the loop's only other sync is the step's own)."""

    def __init__(self, device: torch.device) -> None:
        cuda = device.type == "cuda"
        self.host = torch.zeros((), pin_memory=cuda)
        self.event = torch.cuda.Event() if cuda else None
        self.pending, self.value = False, None

    def __call__(self, loss: torch.Tensor) -> float | None:
        """Start copying ``loss`` (0-d, on the device) unless a copy is in flight; return
        the last loss that has arrived (None before the first)."""
        if self.event is not None and not self.event.query():
            return self.value  # the previous copy has not landed: keep showing the last
        if self.pending:
            self.value = float(self.host)  # host memory: no device sync
        self.host.copy_(loss.detach(), non_blocking=self.event is not None)
        if self.event is not None:
            self.event.record()
        self.pending = True
        return self.value
