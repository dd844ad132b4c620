"""What each command prints once its API function has returned: ``NAME(job, result,
first)``, where ``job`` holds the keywords the function was called with (its output paths
among them) and ``first`` is False on the second and later calls of a repeated command
(``traverse --index 1 2``). Nothing here imports torch at load time."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def nothing(job: dict[str, Any], result: Any, first: bool) -> None:
    """serve prints its own address and blocks."""


def wrote(job: dict[str, Any], result: Any, first: bool) -> None:
    print(f"wrote {result if isinstance(result, Path) else job['out']}")


def sample(job: dict[str, Any], result: Any, first: bool) -> None:
    print(f"wrote {job['out']}")
    if job.get("npy"):
        print(f"wrote {job['npy']}")


def train(job: dict[str, Any], result: Path, first: bool) -> None:
    print(f"run folder: {result}")


def interpolate(job: dict[str, Any], rows: dict, first: bool) -> None:
    print(f"wrote {job['out']} (rows: {', '.join(rows)}; first/last column: the inputs)")


def traverse(job: dict[str, Any], result: dict, first: bool) -> None:
    if first:
        print(f"dimensions by {result['kind']}: " + ", ".join(result["names"]))
        for name, tiles in zip(result["names"], result.get("columns") or (), strict=False):
            if tiles:  # a categorical group's row: its columns are classes, not offsets
                shown = ", ".join(t.removeprefix("category ") for t in tiles)
                print(f"  {name.split(' (')[0]}: its columns show categories {shown}")
    print(f"wrote {job['out']}")


def latent_plot(job: dict[str, Any], result: dict, first: bool) -> None:
    print(f"wrote {job['out']} ({len(result['coords'])} test images)")
    if result["manifold"] is not None:
        print(f"wrote {job['manifold_out']}")


def gradvar(job: dict[str, Any], result: dict, first: bool) -> None:
    from vaelab.evaluation.gradient_variance import format_table

    for r in result.get("rows", []):
        print(f"after epoch {r['epoch']} (test ELBO {r['test_elbo']:.2f}):")
        print(format_table(r["stats"]))
    if "stats" in result:
        print(format_table(result["stats"]))
    path = Path(job["out"])
    print(f"wrote {path}\nwrote {path.with_suffix('.json')}")


def compare(job: dict[str, Any], result: dict, first: bool) -> None:
    path = Path(job["out"])
    print(result["markdown"], end="")
    print(f"wrote {path}, {path.with_suffix('.md')}, {path.with_suffix('.json')}")


def ae_vs_vae(job: dict[str, Any], result: dict, first: bool) -> None:
    out = Path(result["out"])
    print(f"wrote {out / 'ae-vs-vae.png'} and {out / 'ae-vs-vae.json'}")
    print(f"well-formed decodings of {result['points']} uniform points per bounding box "
          f"({result['criterion']}): autoencoder {result['ae']['well_formed']:.1%}, "
          f"VAE {result['vae']['well_formed']:.1%}")  # fmt: skip
    print(f"share of each box inside the test codes' 3-NN balls (the rest are holes): "
          f"autoencoder {result['ae']['box_coverage']:.1%}, "
          f"VAE {result['vae']['box_coverage']:.1%}")  # fmt: skip


EVALUATION_ROWS = (
    ("test ELBO (nats/image)", "elbo"), ("  E_q log p(x|z)", "recon"), ("  KL(q || p)", "kl"),
    ("NLL, K={samples} (nats/image)", "nll_nats"), ("  standard error", "nll_nats_se"),
    ("NLL (bits/dim)", "bits_per_dim"), ("  standard error", "bits_per_dim_se"),
    ("gap NLL - (-ELBO)", "gap_nats"),
)  # fmt: skip


def evaluate(job: dict[str, Any], result: dict, first: bool) -> None:
    from vaelab.evaluation.extras import print_extras

    if result.get("model") == "vqvae":  # bounds from a deterministic encoder (evaluation/vq)
        for key, value in result.items():
            if key not in ("files", "bound_note"):
                print(f"{key:<32}{value:>12.4f}" if isinstance(value, float) else
                      f"{key:<32}{value!s:>12}")  # fmt: skip
        print(result["bound_note"])
        print("wrote " + ", ".join(result.get("files", [])))
        return
    if "no_bound" in result:  # the model declares why ELBO and NLL mean nothing for it
        print(result["no_bound"])
    for name, key in EVALUATION_ROWS if "no_bound" not in result else ():
        value = result[key]
        shown = f"{value:>12.3f}" if value == value else f"{'-':>12}  (one test image: no spread)"
        print(f"{name.format(samples=result['samples']):<32}{shown}")
        if key == "bits_per_dim_se" and result.get("bits_per_dim_comparable") is False:
            print(f"  not comparable with published bits/dim: this NLL is {result['nll_is']}")
    if "kl_per_group" in result:  # deep: which latent groups carry information
        groups = "  ".join(f"{v:.2f}" for v in result["kl_per_group"])
        print(f"{'  KL per group, top first':<32}{groups}")
    print_extras(result)
    nll = f", {result['seconds_nll']:.1f} s for the NLL" if "seconds_nll" in result else ""
    print(f"{result['images']} test images{nll}; wrote " + ", ".join(result["files"]))


def classify(job: dict[str, Any], result: dict, first: bool) -> None:
    pct = lambda v: f"{100 * v:.2f}%"  # noqa: E731
    print(f"test accuracy {pct(result['accuracy'])} (error {pct(result['error'])}) "
          f"on {result['images']} images")  # fmt: skip
    if "baseline" in result:
        b = result["baseline"]
        print(f"supervised-only baseline: accuracy {pct(b['accuracy'])} (error {pct(b['error'])})")
    print(f"wrote {job['out']}")
    if "label_control" in result:
        lc = result["label_control"]
        print(f"label control: {pct(lc['accuracy'])} of {lc['per_class']} samples per label "
              f"seen as that label (the classifier's test accuracy "
              f"{pct(lc['classifier_test_accuracy'])}); "
              f"wrote {job['label_control_out']}")  # fmt: skip
    if job.get("json_out"):
        print(f"wrote {job['json_out']}")


def complete(job: dict[str, Any], result: Any, first: bool) -> None:
    if isinstance(result, dict):  # --evaluate: the scores, as JSON
        import json

        print(json.dumps(result, indent=2))
        return
    if result.acceptance is not None:  # Metropolis-within-Gibbs
        print(f"acceptance rate {result.acceptance:.2f}")
    print(f"wrote {job['out']} (original, observed, {job['n']} completions)")


def runs(job: dict[str, Any], rows: list, first: bool) -> None:
    from vaelab.evaluation.runs_table import text_table  # no torch: reads files only

    print(
        text_table(rows) if rows else f"no run folders under {' '.join(map(str, job['folders']))}"
    )
    for key in ("json_out", "csv_out", "html_out"):
        if job.get(key):
            print(f"wrote {job[key]}")


def sweep(job: dict[str, Any], result: dict, first: bool) -> None:
    for p in result["points"]:
        print(f"{result['option']}={p['value']:g}: rate {p['rate']:.2f}  distortion "
              f"{p['distortion']:.2f}  ELBO {p['elbo']:.2f}  ({p['run']})")  # fmt: skip
    print(f"trained {len(result['trained'])}, already done {len(result['skipped'])}")
    print(f"wrote {result['figure']}")


def export(job: dict[str, Any], result: dict, first: bool) -> None:
    diff = ", ".join(f"{k} {v:.2g}" for k, v in result["max_abs_diff"].items())
    print(f"wrote {result['folder']}: encoder.onnx, decoder.onnx, model.json")
    print(
        f"onnxruntime vs PyTorch on {result['checked_on_images']} test images, largest "
        f"|difference|: {diff}"
    )


def disentanglement(job: dict[str, Any], result: dict, first: bool) -> None:
    seeds = len(result["seeds"])
    print(f"{result['dataset']}: factors {', '.join(result['factor_names'])}; "
          f"{result['runs'][0]['pool']} images per seed, {seeds} seed(s)")  # fmt: skip
    print(f"{'metric':<24}{'mean':>9}{'std':>9}{'s.e.':>9}")
    for name, s in result["summary"].items():
        spread = "".join(f"{'-':>9}" if s[k] is None else f"{s[k]:>9.3f}" for k in ("std", "se"))
        print(f"{name:<24}{s['mean']:>9.3f}{spread}")
    for name, why in result["omitted"].items():
        print(f"{name}: left out, {why}")
    for warning in result.get("warnings", []):
        print(f"warning: {warning}")
    for path in result["files"].values():
        print(f"wrote {path}")
