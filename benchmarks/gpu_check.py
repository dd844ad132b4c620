"""One prepared check for a lent GPU, in a few minutes; writes JSON.

1. ``pytest -m cuda``: the test suite's CUDA-marked tests (tests/test_cuda.py: exact fp16
   and bf16 resume, --deterministic reruns, one host sync per step under torch's sync
   debug mode, float32 densities under bf16, complete's CPU tensors, cuda:1's generator).
2. Resume equality per precision (fp16, bf16): 2 epochs straight vs 1 epoch + --resume,
   weights compared bit for bit; the fp16 loss scale and skipped steps recorded.
3. Training images/s per precision (fp32, bf16, fp16) for the MLP (Bernoulli, 28x28), the
   conv body (28x28), ResNet + dmol (3x32x32) and the deep model + dlogistic (3x32x32),
   through benchmarks/gpu_throughput.measure (fit()'s own Stepper), on random uint8
   images held on the device: a step's cost does not depend on the pixel values, and a
   lent machine has no network to fetch CIFAR-10 from.
4. With two or more GPUs visible: a two-process DDP run (torchrun, NCCL) of 1 epoch.

    python benchmarks/gpu_check.py                      # on the GPU: ~3-5 minutes
    python benchmarks/gpu_check.py --dry-run            # on CPU, tiny sizes, end to end

``--dry-run`` runs every part on the CPU with tiny sizes (CPU autocast and
torch.amp.GradScaler("cpu") stand in for CUDA's; the DDP part uses gloo with two CPU
processes): it checks that the script works, not the GPU. Its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from gpu_throughput import measure  # benchmarks/gpu_throughput.py
from provenance import provenance, save_json  # benchmarks/provenance.py
from vaelab.config import Config, validate, with_overrides
from vaelab.training import step as step_module
from vaelab.training.checkpoint import CHECKPOINT, load_checkpoint
from vaelab.training.loop import fit
from vaelab.training.session import check_config

ROOT = Path(__file__).resolve().parent.parent
PRECISIONS = ("fp32", "bf16", "fp16")
# name -> (image shape, config overrides); batch sizes: full / dry run
MODELS = {
    "mlp-bernoulli": ((1, 28, 28), dict(arch="mlp", binarize="dynamic")),
    "conv-bernoulli": ((1, 28, 28), dict(arch="conv", binarize="dynamic")),
    "resnet-dmol": ((3, 32, 32), dict(arch="resnet", likelihood="dmol", mixtures=10)),
    "deep-dlogistic": ((3, 32, 32), dict(model="deep", likelihood="dlogistic")),
}
BATCH = {"mlp-bernoulli": 512, "conv-bernoulli": 256, "resnet-dmol": 128, "deep-dlogistic": 64}
DRY = {  # --dry-run: tiny widths, the same code paths
    "mlp-bernoulli": dict(hidden="32"),
    "conv-bernoulli": dict(hidden="8,8"),
    "resnet-dmol": dict(hidden="8,8,8", mixtures=2),
    "deep-dlogistic": dict(deep_widths="8,8,8", deep_groups="0,1,1", group_channels=2),
}


def run_pytest(device: str, out: Path) -> dict:
    """``pytest -m cuda`` in a subprocess; counts from its JUnit XML."""
    xml = out.with_suffix(".junit.xml")
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests", f"--junitxml={xml}"]
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{os.environ.get('PYTHONPATH', '')}"}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    text = xml.read_text() if xml.is_file() else ""
    counts = {}
    if "testsuite " in text:
        head = text[text.index("<testsuite ") :].split(">", 1)[0]
        for key in ("tests", "failures", "errors", "skipped"):
            counts[key] = int(head.split(f'{key}="')[1].split('"')[0])
    return {"returncode": done.returncode, **counts, "seconds": time.perf_counter() - t0,
            "tail": done.stdout[-1500:]}  # fmt: skip


def resume_equality(device: str, precision: str, dry: bool, folder: Path) -> dict:
    """2 epochs straight vs 1 + --resume on digits: weights equal bit for bit?"""
    base = {"dataset": "digits", "hidden": "32" if dry else "256", "latent_dim": 4,
            "batch_size": 64, "progress": False, "report": False, "device": device,
            "precision": precision, "likelihood": "gaussian-fixed", "sigma": 0.01,
            "deterministic": True}  # fmt: skip
    # sigma 0.01: gradients x 2^16 overflow fp16, so the loss scaler backs off (and must
    # be restored on resume for the runs to agree).

    def config(epochs: int) -> Config:
        return check_config(with_overrides(Config(), {**base, "epochs": epochs}, "gpu_check"))

    a, b = folder / f"straight-{precision}", folder / f"resumed-{precision}"
    fit(config(2), a)
    fit(config(1), b)
    fit(config(2), b, resume=True)
    wa, wb = (load_checkpoint(r / CHECKPOINT) for r in (a, b))
    ma, mb = wa.model_state(), wb.model_state()
    return {
        "precision": precision,
        "equal": all(torch.equal(ma[k], mb[k]) for k in ma),
        "max_abs_diff": max((ma[k].float() - mb[k].float()).abs().max().item() for k in ma),
        "loss_scale": (wa.meta.get("scaler") or {}).get("scale"),
        "skipped_steps": wa.state.skipped_steps,
    }


def throughput(device: torch.device, dry: bool) -> list[dict]:
    """images/s per model and precision (benchmarks/gpu_throughput.measure)."""
    args = argparse.Namespace(steps=2 if dry else 50, warmup=1 if dry else 10,
                              rounds=1 if dry else 3)  # fmt: skip
    rows = []
    for name, (shape, options) in MODELS.items():
        batch = 8 if dry else BATCH[name]
        torch.manual_seed(0)
        x = torch.randint(0, 256, (batch * 4, *shape), dtype=torch.uint8, device=device)
        for precision in PRECISIONS:
            no_bf16 = device.type == "cuda" and not torch.cuda.is_bf16_supported(
                including_emulation=False
            )
            if precision == "bf16" and no_bf16:
                rows.append({"model": name, "precision": precision, "skipped": "no bf16"})
                continue
            over = {**options, "batch_size": batch, "precision": precision,
                    "device": str(device), "progress": False}  # fmt: skip
            if dry:
                over.update(DRY[name])
            config = validate(with_overrides(Config(), over, "gpu_check"))
            row = {"model": name, "precision": precision, "batch_size": batch}
            row.update(measure(config, x, device, args))
            rows.append(row)
            print(f"  {name:15} {precision}: {row['images_per_s']:>10,.0f} images/s", flush=True)
    return rows


def ddp(device: str, folder: Path) -> dict:
    """A two-process torchrun (NCCL on CUDA, gloo on CPU) of 1 epoch on digits."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "vaelab", "train", "--dataset", "digits", "--hidden", "64",
           "--batch-size", "64", "--epochs", "1", "--device", device, "--progress", "false",
           "--report", "false", "--out", str(folder / "ddp")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    rows = [json.loads(line) for line in (folder / "ddp" / "metrics.jsonl").read_text().splitlines()
            ] if done.returncode == 0 else []  # fmt: skip
    return {"returncode": done.returncode, "seconds": time.perf_counter() - t0,
            "test_elbo": rows[-1]["test_elbo"] if rows else None,
            "tail": (done.stdout + done.stderr)[-1500:]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: checks the script")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/...)")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: "
                    "tests,resume,throughput,ddp")  # fmt: skip
    args = ap.parse_args(argv)
    dry, skip = args.dry_run, set(filter(None, args.skip.split(",")))
    if not dry and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available; use --dry-run to check the script on CPU")
        return 1
    name = "gpu_check_dry_run.json" if dry else "gpu_check.json"
    out = Path(args.out or ROOT / "benchmarks" / "results" / name)
    device = torch.device("cpu" if dry else "cuda")
    if dry:  # CPU autocast and GradScaler("cpu") stand in for CUDA's
        step_module.CPU_AMP = True
    result: dict = {"benchmark": "gpu_check", "dry_run": dry, **provenance(str(device)),
                    "device": torch.cuda.get_device_name() if not dry else "cpu",
                    "gpus": torch.cuda.device_count(), "torch": torch.__version__}  # fmt: skip
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        if "tests" not in skip:
            print("1. pytest -m cuda", flush=True)
            result["cuda_tests"] = run_pytest(str(device), Path(tmp) / "pytest")
            print(f"   {result['cuda_tests']}"[:300], flush=True)
        if "resume" not in skip:
            print("2. resume equality", flush=True)
            bf16 = dry or torch.cuda.is_bf16_supported(including_emulation=False)
            kinds = ["fp16", "bf16"] if bf16 else ["fp16"]
            result["resume"] = [resume_equality(str(device), p, dry, Path(tmp)) for p in kinds]
            print(f"   {result['resume']}", flush=True)
        if "throughput" not in skip:
            print("3. images/s per precision", flush=True)
            result["throughput"] = throughput(device, dry)
        if "ddp" not in skip and (dry or torch.cuda.device_count() >= 2):
            print("4. two-process DDP", flush=True)
            result["ddp"] = ddp("cpu" if dry else "cuda", Path(tmp))
            print(f"   returncode {result['ddp']['returncode']}", flush=True)
        elif "ddp" not in skip:
            result["ddp"] = {"skipped": f"{torch.cuda.device_count()} GPU visible"}
    result["seconds"] = time.perf_counter() - t0
    ok = result.get("cuda_tests", {}).get("returncode", 0) in (0, 5)  # 5: none collected
    ok &= all(r["equal"] for r in result.get("resume", []))
    ok &= result.get("ddp", {}).get("returncode", 0) == 0
    result["ok"] = bool(ok)
    save_json(out, result)
    print(f"gpu_check: {'OK' if ok else 'FAILED'} in {result['seconds']:.0f} s; wrote {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
