"""The command table: each ``vaelab COMMAND`` is one API function (``vaelab.<command>``) and
the options that feed it. ``cli/__init__`` builds argparse from this table and calls the
function; nothing here imports torch (``--help`` must answer at once), so the function is
named by string and imported only when the command runs.

Options shared by commands (run folder, --device, --seed, --out, --overwrite, --json) are
declared once, in :data:`COMMON`; a command lists the ones it takes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vaelab.cli.names import registry_names
from vaelab.config import coerce
from vaelab.training.record import OUTPUTS


@dataclass(frozen=True)
class Option:
    """One argparse argument. ``dest`` is the API function's keyword (default: the flag's
    name); ``convert`` turns the parsed text into the keyword's value (a ``VaelabError``
    names the flag); ``positive`` refuses values below 1; ``output`` marks a file the
    command writes, refused before any work if it exists (unless --overwrite); options
    sharing a ``group`` are mutually exclusive (``required`` on the first one makes the
    group required)."""

    flags: tuple[str, ...]
    help: str
    type: Callable[[str], Any] | None = None
    default: Any = None
    dest: str | None = None
    choices: tuple[str, ...] | None = None
    convert: Callable[[Any], Any] | None = None
    positive: bool = False
    output: bool = False
    group: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # nargs, action, metavar, required

    @property
    def name(self) -> str:
        return self.dest or self.flags[0].lstrip("-").replace("-", "_")


def opt(*flags: str, help: str, **kw: Any) -> Option:
    known = {f for f in Option.__dataclass_fields__ if f not in ("flags", "help", "extra")}
    extra = {k: kw.pop(k) for k in list(kw) if k not in known}
    return Option(flags, help, extra=extra, **kw)


# Declared once; a command names the ones it takes. ``{out}`` in a help text is the
# command's default file name.
COMMON: dict[str, Option] = {
    "run": opt("run", metavar="RUN_DIR", help="run folder written by vaelab train"),
    "device": opt("--device", default="cpu", help="auto | cpu | cuda | cuda:N"),
    "seed": opt("--seed", type=int, default=0, help="seed of the random draws"),
    "out": opt(
        "--out", help=f"output file (default: RUN_DIR/{OUTPUTS}/{{out}}, numbered if it exists)"
    ),
    "overwrite": opt("--overwrite", action="store_true", help="replace an existing --out"),
    "json": opt(
        "--json",
        dest="json_out",
        output=True,
        help="also write the results to this JSON file (new, or --overwrite)",
    ),
}


@dataclass(frozen=True)
class Command:
    """``function``: the API function's module and name (``vaelab.<command>``); ``common``:
    the :data:`COMMON` options taken; ``out``: the default output file name in
    RUN/outputs/ (``{index}``-style fields are filled from the option of that name);
    ``beside``: extra output keywords and their file names, next to the output;
    ``each``: an option holding a list, the function called once per value; ``present``:
    the name in :mod:`vaelab.cli.present` that prints the result; ``help_of``: help texts
    replacing a common option's; ``open_run``: False where the function takes the path."""

    help: str
    function: tuple[str, str]
    options: tuple[Option, ...] = ()
    common: tuple[str, ...] = ("run", "device", "seed", "out", "overwrite")
    out: str | None = None
    beside: dict[str, str] = field(default_factory=dict)
    each: str | None = None
    present: str = "wrote"
    help_of: dict[str, str] = field(default_factory=dict)
    open_run: bool = True
    arguments: str | None = None  # a module adding its own generated flags (train)
    fixed: dict[str, Any] = field(default_factory=dict)  # keywords the command always passes


def _floats(text: str) -> tuple[float, ...]:
    return coerce(text, tuple[float, ...], "--group-temperature")


def _values(text: str) -> tuple[float, ...]:
    return coerce(text, tuple[float, ...], "--values")


def _names(text: str | None) -> list[str] | None:
    return [n for n in text.split(",") if n] if text else None


PICTURES, STUDIES, API = "vaelab.api.drawing", "vaelab.api.studies", "vaelab.api"
SAMPLERS = tuple(sorted(registry_names("vaelab.evaluation.samplers", "SAMPLERS")))
EMBEDDINGS = registry_names("vaelab.evaluation.explore", "EMBEDDINGS")
COMPLETION_METHODS = tuple(sorted(registry_names("vaelab.evaluation.completion", "METHODS")))
COMPLETION_FILLS = tuple(sorted(registry_names("vaelab.evaluation.completion", "FILLS")))
TOOLS = "vaelab.api.tools"

COMMANDS: dict[str, Command] = {
    "train": Command(
        "train an autoencoder or a VAE; writes a run folder", (API, "train"),
        common=("out", "overwrite"), arguments="vaelab.cli.train", present="train",
        help_of={"out": "run folder (default: runs/<time>-<dataset>-<model>)"},
    ),
    "sample": Command(
        "draw images from the prior and decode them into a PNG grid", (PICTURES, "sample"),
        out="sample.png", present="sample",
        options=(
            opt("-n", type=int, default=64, positive=True, help="number of images"),
            opt("--temperature", type=float, default=1.0,
                help="scale of the prior's standard deviation"),
            opt("--group-temperature", metavar="T1,T2,...", convert=_floats,
                help="deep: one temperature per latent group, top first (replaces "
                "--temperature)"),
            opt("--sampler", choices=SAMPLERS, default="prior",
                help="z from the prior, or post hoc from the training latents: a Gaussian "
                "mixture (gmm), a masked autoregressive flow (maf) or a second VAE "
                "(two-stage), fitted once and kept in the run folder"),
            opt("--components", type=int, default=10, help="GMM sampler components"),
            opt("--label", help="cvae/m2: class index or name (e.g. 7, sneaker), or 'all' "
                "for one row per class with the same z in each column"),
            opt("--npy", output=True, help="also save the images as a .npy array"),
        ),
    ),
    "reconstruct": Command(
        "show test images beside their reconstructions as a PNG grid",
        (PICTURES, "reconstruct"), out="reconstruct.png", common=("run", "device", "out",
                                                                   "overwrite"),
        options=(
            opt("-n", type=int, default=16, positive=True, help="number of test images"),
            opt("--start", type=int, default=0, help="index of the first test image"),
        ),
    ),
    "similar": Command(
        "decode several images that resemble a given one (first tile: the input)",
        (PICTURES, "similar"), out="similar.png",
        options=(
            opt("--index", type=int, dest="image", group="input", required=True,
                help="index of a test-set image"),
            opt("--image", group="input", help="an image file (resized to the model's size)"),
            opt("-n", type=int, default=15, positive=True, help="number of images to generate"),
            opt("--spread", type=float, default=1.0,
                help="noise scale in units of the posterior's std"),
        ),
    ),
    "evaluate": Command(
        "test-set ELBO, importance-sampled log-likelihood (nats, bits/dim), latent health, "
        "reconstruction and sample quality, as JSON (RUN_DIR/evaluation.json, numbered)",
        (API, "evaluate"), common=("run", "device", "seed", "json", "overwrite"),
        present="evaluate", fixed={"record": True},
        help_of={"seed": "seed of the importance samples", "overwrite":
                 "replace an existing --json"},
        options=(
            opt("--samples", type=int, default=1000, help="importance samples K"),
            opt("--limit", type=int, positive=True, help="first N test images only"),
            opt("--no-quality", dest="quality", action="store_true", convert=lambda off: not off,
                help="skip the classifier sample metrics (the slow part; trains a classifier "
                "once)"),
            opt("--sampler", dest="samplers", action="append", choices=SAMPLERS,
                convert=lambda v: tuple(v or ["prior"]),
                help="latent sampler for the sample metrics; repeat for several (default: "
                "prior; gmm for a model without a prior)"),
            opt("--components", type=int, default=10, help="GMM sampler components"),
            opt("--quality-samples", type=int, default=5000,
                help="generated and test images compared"),
            opt("--resume", action="store_true",
                help="continue the evaluation Ctrl-C or a kill stopped (its partial sums are "
                "in RUN_DIR/evaluation.partial.safetensors); the same numbers as one run "
                "uninterrupted"),
        ),
    ),
    "gradvar": Command(
        "gradient variance and SNR of each latent-gradient estimator (table + log-scale PNG)",
        (STUDIES, "gradvar"), out="gradvar.png", present="gradvar",
        options=(
            opt("--estimators", convert=_names,
                help="comma-separated (default: all that apply to the run's posterior)"),
            opt("--draws", type=int, default=100, positive=True,
                help="independent estimates each"),
            opt("--batch-size", type=int, default=128, positive=True,
                help="test images in the batch"),
            opt("--samples", type=int, default=1, positive=True, help="K samples per image"),
            opt("--init", action="store_true",
                help="a freshly initialised model of the run's config"),
            opt("--during-training", type=int, default=0, metavar="EPOCHS",
                help="train a fresh model of the run's config this many epochs, measuring "
                "after each"),
        ),
    ),
    "interpolate": Command(
        "decode the path between two images' latents (rows: methods; ends: the inputs)",
        (PICTURES, "interpolate"), out="interpolate.png", present="interpolate",
        options=(
            opt("--from", dest="source", required=True,
                help="a test-set index or an image file"),
            opt("--to", dest="target_image", required=True,
                help="a test-set index or an image file"),
            opt("--steps", type=int, default=10, help="decodings along the path"),
            opt("--method", default="both",
                choices=(*registry_names("vaelab.evaluation.explore", "INTERPOLATIONS"), "both"),
                help="linear, spherical (norm goes linearly, direction along the great "
                "circle) or both"),
        ),
    ),
    "traverse": Command(
        "vary the most-used (top-KL) latent dimensions around test images' means",
        (PICTURES, "traverse"), out="traverse-{index}.png", each="index", present="traverse",
        common=("run", "device", "out", "overwrite"),
        options=(
            opt("--index", type=int, nargs="+", default=[0],
                help="test-set image(s); one grid each"),
            opt("--dims", type=int, default=8, positive=True,
                help="how many dimensions (those with the most KL)"),
            opt("--steps", type=int, default=9, help="values per dimension"),
            opt("--span", type=float, default=3.0,
                help="largest offset, in prior standard deviations"),
        ),
    ),
    "latent-plot": Command(
        "scatter the test set's latent means (PCA/t-SNE above 2-D); 2-D or a sphere S^1/S^2: "
        "the decoded manifold",
        (PICTURES, "latent_plot"), out="latent.png", beside={"manifold_out": "manifold.png"},
        present="latent_plot",
        options=(
            opt("--method", default="pca", choices=EMBEDDINGS,
                help="projection for latents of more than 2 dimensions"),
            opt("--limit", type=int, positive=True,
                help="use the first N test images (t-SNE is slow on 10,000)"),
            opt("--grid", type=int, default=20, positive=True,
                help="manifold tiles per side (2-D, S^1, S^2)"),
        ),
    ),
    "ae-vs-vae": Command(
        "train (or take) an AE and a VAE with a 2-D latent and compare their latent spaces",
        (STUDIES, "ae_vs_vae"), common=("device", "seed", "out", "overwrite"),
        present="ae_vs_vae",
        help_of={"out": "output folder (default: runs/<time>-ae-vs-vae)",
                 "overwrite": "replace a non-empty --out",
                 "seed": "seed of training and the draws"},
        options=(
            opt("--ae", help="an existing autoencoder run (2-D latent)"),
            opt("--vae", help="an existing VAE run (2-D latent)"),
            opt("--dataset", default="fashion-mnist", help="data to train both on"),
            opt("--epochs", type=int, default=5, help="epochs for each model"),
            opt("--arch", default="mlp", help="mlp | conv (both models)"),
            opt("--hidden", default="512,256", help="body widths (both models)"),
            opt("--points", type=int, default=1000,
                help="uniform points per bounding box to judge"),
            opt("--grid", type=int, default=15, help="decoded tiles per side"),
            opt("--judge", choices=registry_names("vaelab.evaluation.aevae", "JUDGES"),
                help="what decides that a decoding is well-formed (default: classifier for "
                "labelled data, else reconstruction)"),
        ),
    ),
    "disentanglement": Command(
        "disentanglement metrics on the data's ground-truth factors (beta-VAE and FactorVAE "
        "scores, MIG exact and binned, SAP, DCI, total correlation) over seeds; a traversal "
        "per latent labelled by factor and an MI matrix picture",
        (STUDIES, "disentanglement"), out="disentanglement-traverse.png",
        beside={"matrix_out": "disentanglement-mi.png", "record_out": "disentanglement.json"},
        common=("run", "device", "seed", "out", "overwrite", "json"), present="disentanglement",
        help_of={"seed": "first seed (then seed+1, ...)"},
        options=(
            opt("--pool", type=int, default=10000, help="images scored per seed"),
            opt("--seeds", type=int, default=3, help="repetitions (for the spread)"),
            opt("--metrics", convert=_names, help="comma-separated subset of beta_vae, "
                "factor_vae, mig, sap, dci (default: all; mig also gives the total "
                "correlation)"),
            opt("--votes", type=int, default=5000,
                help="training votes of the beta-VAE / FactorVAE scores (2/5 as many held out)"),
            opt("--mig-samples", type=int, default=1000,
                help="draws of the exact MIG's entropy estimates"),
            opt("--bins", type=int, default=20, help="bins of the binned MIG"),
            opt("--importance", choices=("forest", "lasso"), default="forest",
                help="DCI importances: random forests or lasso"),
            opt("--index", type=int, default=0,
                help="image traversed in the picture: the INDEX-th of 2,000 drawn with --seed"),
        ),
    ),
    "report": Command(
        "write a self-contained HTML report of a run (images embedded)", (PICTURES, "report"),
        out="report.html",
    ),
    "compare": Command(
        "compare the evaluations of several runs: a table (printed, .md, .json) and a bar chart",
        (STUDIES, "compare"), common=("out", "overwrite"), out="comparison.png",
        present="compare",
        help_of={"out": "chart path (.png; the table goes next to it as .md and .json); "
                 "default comparison.png here, numbered if it exists"},
        options=(
            opt("runs", nargs="+", metavar="RUN",
                help="run folders (their newest evaluation*.json) or evaluation JSON files"),
        ),
    ),
    "classify": Command(
        "classify the test set with an m2 (or cvae) run: accuracy and confusion matrix PNG",
        (API, "classify"), common=("run", "device", "seed", "out", "overwrite", "json"),
        out="confusion.png", beside={"label_control_out": "label-control.png"},
        present="classify",
        options=(
            opt("--limit", type=int, positive=True, help="first N test images only"),
            opt("--baseline", action="store_true",
                help="also train the same classifier network on the run's labelled images "
                "alone (supervised-only baseline) and report it"),
            opt("--baseline-steps", type=int, default=2000, help="its Adam steps"),
            opt("--label-control", type=int, default=0, metavar="N",
                help="also draw N images per label and report how often the dataset's "
                "classifier sees the label asked for (confusion matrix in "
                "RUN_DIR/outputs/label-control.png)"),
        ),
    ),
    "complete": Command(
        "complete missing pixels of an image (inpainting) or its full resolution",
        (API, "complete"), common=("run", "device", "seed", "out", "overwrite", "json"),
        out="complete.png", present="complete", fixed={"details": True},
        options=(
            opt("--index", type=int, dest="x", group="input",
                help="test image index (default 0)"),
            opt("--input", dest="x", group="input",
                help="an image file (resized to the model's size)"),
            opt("--mask", dest="mask_file", group="observed",
                help="PNG whose white pixels are missing"),
            opt("--mask-preset", dest="mask", group="observed",
                help="left-half | top-half | centre-square | random:P (P = missing share)"),
            opt("--downscale", type=int, dest="downscale_factor", group="observed",
                help="super-resolution factor"),
            opt("-n", type=int, default=8, help="completions per input"),
            opt("--steps", type=int, default=50, help="iterations of the chain"),
            opt("--method", choices=COMPLETION_METHODS,
                default="pseudo-gibbs",
                help="the chain: pseudo-Gibbs (decode, re-encode) or Metropolis-within-Gibbs, "
                "which accepts each move by the model's joint density"),
            opt("--fill", choices=COMPLETION_FILLS,
                default="mean",
                help="pseudo-gibbs: put back E[x_mis|z] (mean) or a draw of p(x_mis|z) "
                "(sample); mwg always draws"),
            opt("--evaluate", type=int, metavar="N",
                help="instead of pictures: missing-pixel MSE on the first N test images vs "
                "the baselines (JSON on stdout)"),
        ),
    ),
    "serve": Command(
        "explore a run's latent space in the browser (map, sliders, similar, completion)",
        ("vaelab.web", "serve"), common=("run", "device", "seed"), present="nothing",
        open_run=False,
        options=(
            opt("--port", type=int, default=8000, help="TCP port (0: any free port)"),
            opt("--host", default="127.0.0.1",
                help="address to listen on; the default is reachable from this machine only. "
                "WARNING: --host 0.0.0.0 lets anyone who can reach this machine use the page "
                "(and its CPU) without a password"),
            opt("--method", default="pca", choices=EMBEDDINGS,
                help="map of latents above 2-D (t-SNE is slower to start)"),
            opt("--limit", type=int, default=2000, positive=True, help="test images on the map"),
        ),
    ),
    "runs": Command(
        "list the run folders under some folders as one table (status, bounds, NLL, time)",
        (TOOLS, "runs"), common=("json", "overwrite"), present="runs",
        options=(
            opt("folders", nargs="*", metavar="FOLDER", default=["runs"],
                help="run folders or folders holding them (default: runs)"),
            opt("--sort", metavar="COLUMN",
                help="sort by this column (e.g. test_elbo, nll, seconds, status)"),
            opt("--reverse", action="store_true", help="sort in descending order"),
            opt("--csv", dest="csv_out", output=True, help="also write the rows as CSV"),
            opt("--html", dest="html_out", output=True,
                help="also write a page of the table and each run's sample grids"),
        ),
    ),
    "sweep": Command(
        "train one run per value of a numeric option (same seed and data) and draw rate "
        "against distortion with ELBO isolines; rerun to resume",
        (TOOLS, "sweep"), common=("out", "overwrite"), arguments="vaelab.cli.train",
        present="sweep",
        help_of={"out": "sweep folder (default: runs/<time>-sweep-<option>); one run "
                 "folder per value inside", "overwrite": "delete the sweep folder first"},
        options=(
            opt("--option", default="beta", help="the numeric config field to vary"),
            opt("--values", metavar="V1,V2,...", convert=_values, default="0.25,0.5,1,2,4",
                help="its values"),
        ),
    ),
    "export": Command(
        "write the encoder and decoder as ONNX (dynamic batch) with a JSON of shapes, checked "
        "with onnxruntime against PyTorch", (TOOLS, "export"),
        common=("run", "overwrite"), present="export", open_run=False,
        help_of={"overwrite": "replace an existing --onnx folder"},
        options=(
            opt("--onnx", metavar="DIR", required=True, output=True,
                help="folder for encoder.onnx, decoder.onnx and model.json"),
            opt("--limit", type=int, default=256, positive=True,
                help="test images the ONNX outputs are checked on"),
        ),
    ),
}  # fmt: skip

# Discrete codes (--model vqvae): the learned prior over a run's code grids.
COMMANDS["train-prior"] = Command(
    "vqvae: fit a gated PixelCNN prior over the run's code grids (RUN/prior/, resumable)",
    ("vaelab.api.codes", "train_prior"), common=("run", "device", "seed"), present="nothing",
    options=(
        opt("--epochs", type=int, default=20, help="passes over the training code grids"),
        opt("--batch-size", type=int, default=64, positive=True, help="code grids per step"),
        opt("--lr", type=float, default=1e-3, help="Adam learning rate"),
        opt("--width", type=int, default=64, positive=True, help="channels of the stacks"),
        opt("--layers", type=int, default=6, positive=True, help="gated masked layers"),
        opt("--kernel", type=int, default=3, positive=True, help="masked kernel side"),
        opt("--resume", action="store_true", help="continue RUN/prior to --epochs"),
        # not the common --overwrite: that one is about output files (always passed here)
        opt("--replace", dest="overwrite", action="store_true",
            help="replace an existing RUN/prior (train a new one from scratch)"),
    ),
)  # fmt: skip
