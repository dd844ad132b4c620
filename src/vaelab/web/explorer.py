"""What the explorer page asks of a trained model, as plain Python (no HTTP here).

Each operation is a thin call to the library's free functions (``explore``, ``generate``,
``samplers``, ``labels``, ``complete``) on a run opened by ``vaelab.open_run``; images come
back as floats in [0, 1], ``(N, C, H, W)`` on the CPU. One lock serializes the model: the
server answers requests on threads. A conditional model's label travels as an argument
(``decode_mean(..., y=)``): the page's chosen class, class 0 when none is chosen.
A VQ-VAE run (``discrete_codes``) samples code grids from its trained PixelCNN prior
(RUN/prior, read once at start; without one the page says so in one line), moves codes to
nearby codebook entries for "similar images", and completes by the iterated projection,
as ``vaelab sample`` / ``similar`` / ``complete`` do.
"""

from __future__ import annotations

import threading
from typing import Any

import torch

from vaelab.data import ImageData
from vaelab.data.prepare import binarize_fixed, eval_images, to_unit
from vaelab.errors import VaelabError, at_least, unknown_name
from vaelab.evaluation import explore
from vaelab.evaluation.completion import METHODS as COMPLETIONS
from vaelab.evaluation.completion import complete
from vaelab.evaluation.explore import (
    INTERPOLATIONS,
    decode_mean,
    dim_scores,
    interpolate,
    latent_means,
    prior_std,
    top_dims,
)
from vaelab.evaluation.generate import near_images
from vaelab.evaluation.sample_labels import sample_class
from vaelab.evaluation.samplers import sample_images
from vaelab.evaluation.vq import nearby_codes
from vaelab.evaluation.vq import sample_images as sample_codes
from vaelab.training.code_prior import read_prior
from vaelab.training.record import Run
from vaelab.web.latentmap import LatentMap


class Explorer:
    """A loaded model with the test images of its map, their codes and the ranked dimensions.

    ``limit`` test images (the first ones) make the map; ``dims`` of the most-used latent
    dimensions (``explore.dim_scores``: KL per dimension, else activity) get sliders.
    """

    def __init__(
        self, run: Run, data: ImageData, method: str = "pca", limit: int = 2000,
        dims: int = 8, seed: int = 0,
    ) -> None:  # fmt: skip
        model = run.model
        if not model.on_images:
            raise VaelabError("serve: an M1+M2 run models M1's features, not images; serve M1")
        at_least("--limit", limit, 2)
        self.model, self.config, self.lock = model, run.config, threading.Lock()
        cfg = run.config
        self.image_shape: tuple[int, int, int] = tuple(model.image_shape)
        self.images = eval_images(data.test_x[:limit], cfg.data.binarize, cfg.train.seed)
        self.labels = data.test_y[: len(self.images)] if data.test_y is not None else None
        self.dataset = data.name
        self.class_names = list(data.class_names or [])
        self.is_ae = not (model.has_posterior and model.has_prior)  # no spread, no p(z)
        self.discrete = model.discrete_codes  # a VQ-VAE: its own sample/similar/complete
        found = read_prior(run) if self.discrete else None
        self.code_prior = None if found is None else found[0].to(model.device)
        self.no_prior_note = (
            f"No code prior trained for this run: run `vaelab train-prior {run.folder}` and "
            "reload the page to draw new images."
            if self.discrete and self.code_prior is None else None
        )  # fmt: skip
        self.conditional = model.uses_labels
        if self.conditional and not self.class_names:
            self.class_names = [str(i) for i in range(model.num_classes)]
        z = latent_means(model, self.images)
        self.map = LatentMap.fit(z, method, seed)
        try:
            self.scores, self.measure = dim_scores(model, self.images)
        except VaelabError:  # a plain autoencoder: how much each code coordinate varies
            self.scores, self.measure = z.var(0, correction=int(len(z) > 1)), "activity"
        # Sliders: the most-used Gaussian dims; a categorical group gets a class selector.
        self.dims = [d for d in top_dims(self.scores, len(self.scores))
                     if explore.category_group(model, d) is None][:dims]  # fmt: skip
        self.groups = explore.ranked_groups(model, self.scores)  # (g, KL), top first
        # Slider span per dimension: the prior's std (as vaelab traverse), or the codes' own.
        spread = z.std(0, correction=int(len(z) > 1))  # one test image: 0, not NaN
        self.scale = spread if self.is_ae else prior_std(model).cpu()

    # ---- what the page needs to draw itself -------------------------------------------
    def info(self, run_name: str) -> dict[str, Any]:
        """Everything the page shows before any request: the map, dimensions, features."""
        m, shape = self.map, self.image_shape
        return {
            "run": run_name,
            "dataset": self.dataset,
            "model": self.config.model.model,
            "image_shape": list(shape),
            "latent_dim": int(self.map.z.shape[1]),
            "map": {
                "kind": m.kind,
                "prefix": m.prefix,
                "points": [[round(float(u), 5), round(float(v), 5)] for u, v in m.coords],
                "labels": None if self.labels is None else self.labels.tolist(),
            },
            "class_names": self.class_names,
            "dims": [
                {
                    "index": d,
                    "score": round(float(self.scores[d]), 4),
                    "scale": float(self.scale[d]),
                }
                for d in self.dims
            ],
            "measure": self.measure,
            "latent_space": self.model.latent_space,  # the page says what a slider does there
            "groups": self.group_info(),  # categorical latents: one class selector each
            "interpolations": list(INTERPOLATIONS),
            "completions": ["pseudo-gibbs"] if self.discrete else sorted(COMPLETIONS),
            "features": {
                "labels": self.labels is not None,
                "conditional": self.conditional,
                "sample": not self.is_ae or self.discrete,
                "similar": not self.is_ae or self.discrete,
                "complete": not self.is_ae or self.discrete,
                "codes": self.discrete,  # a VQ-VAE: the code-grid card
                "sample_note": self.no_prior_note,  # a VQ-VAE without a code prior: why not
            },
        }

    def check_index(self, i: int) -> int:
        if not 0 <= i < len(self.images):
            raise VaelabError(f"index {i}: the map holds test images 0..{len(self.images) - 1}")
        return i

    def test_image(self, i: int) -> torch.Tensor:
        """Test image ``i`` as the model sees it (binarized if the run binarizes), uint8."""
        return self.images[self.check_index(i)]

    def prepare_upload(self, x: torch.Tensor) -> torch.Tensor:
        """An uploaded uint8 image ``(C, H, W)`` as the model sees images (as ``vaelab similar
        --image`` does: binarized with a fixed draw when the run binarizes)."""
        if self.config.data.binarize != "none":
            x = binarize_fixed(x.unsqueeze(0), self.config.train.seed)[0]
        return x

    def nearest(self, z: torch.Tensor) -> int:
        """Index of the test image whose code is closest to ``z`` ``(D,)``."""
        return int(((self.map.z - z.double()) ** 2).sum(1).argmin())

    def _decode_label(self, label: int | None) -> int | None:
        """The label a conditional model decodes a latent with (class 0 when none is
        chosen); None for a model without labels."""
        label = self.check_label(label)
        return (label or 0) if self.conditional else None

    def check_label(self, label: int | None) -> int | None:
        if label is None:
            return None
        if not self.conditional:
            raise VaelabError("label: this run's model is not conditioned on labels")
        if not 0 <= label < len(self.class_names):
            raise VaelabError(f"label {label}: expected a class 0..{len(self.class_names) - 1}")
        return label

    def check_feature(self, name: str) -> None:
        if self.discrete:
            if name == "sample" and self.code_prior is None:
                raise VaelabError(f"sample: {self.no_prior_note}")
            return
        if self.is_ae:
            raise VaelabError(f"{name}: a plain autoencoder has no posterior or prior for this")

    # ---- operations --------------------------------------------------------------------
    def in_support(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` clamped to the prior's support (Gamma/Beta latents, as ``vaelab traverse``
        does): a slider or a map point may reach past it."""
        if not self.model.has_prior:  # a point code: no support to stay in
            return z
        if self.model.latent_space == "sphere":  # a slider or map point, put on S^{D-1}
            return z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        if self.model.latent_space == "categorical":  # each group one-hot: its argmax class
            return self.with_classes(z, self.classes(z))
        bounds = getattr(self.model.prior, "bounds", None)
        return z.clamp(*bounds) if bounds else z

    def decode(self, z: torch.Tensor, label: int | None = None) -> torch.Tensor:
        """The mean of p(x|z) for one latent ``z`` ``(D,)`` (in the support); ``(C, H, W)``."""
        with self.lock:
            return decode_mean(self.model, z[None], y=self._decode_label(label))[0]

    def sample(
        self, n: int, temperature: float, seed: int, label: int | None = None
    ) -> torch.Tensor:
        """``n`` decoded prior draws at ``temperature`` (of class ``label`` for a CVAE/M2).
        The same seed gives the same noise, so moving the temperature rescales the same draws."""
        self.check_feature("sample")
        label = self.check_label(label)
        with self.lock:
            torch.manual_seed(seed)
            if label is not None:
                return sample_class(self.model, n, label, temperature).cpu()
            if self.discrete:  # code grids from the PixelCNN prior, decoded
                return sample_codes(self.model, self.code_prior, n, temperature, seed)
            return sample_images(self.model, n, "prior", temperature).cpu()

    def near_images(self, x: torch.Tensor, n: int, spread: float, seed: int) -> torch.Tensor:
        """Decodings of z = mu(x) + spread * sigma(x) * eps for a uint8 image ``x`` (a VQ-VAE:
        its code grid with codes moved to nearby entries, ``evaluation.vq.nearby_codes``)."""
        self.check_feature("similar")
        with self.lock:
            if self.discrete:
                return nearby_codes(self.model, x, n, spread, seed)
            return near_images(self.model, x, n, spread, seed=seed).cpu()

    def interpolate(
        self, a: int, b: int, steps: int, method: str, label: int | None = None
    ) -> torch.Tensor:
        """Decodings along the path between test images ``a`` and ``b``'s codes."""
        if method not in INTERPOLATIONS:
            raise unknown_name("method", method, INTERPOLATIONS)
        x0, x1 = self.test_image(a), self.test_image(b)
        with self.lock:
            return interpolate(self.model, x0, x1, steps, method, y=self._decode_label(label))

    def complete(
        self, i: int, missing: torch.Tensor, n: int, steps: int, method: str, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor, float | None]:
        """Completions ``(n, C, H, W)`` of test image ``i`` with ``missing`` pixels (bool
        ``(C, H, W)``, True = missing); also the observed image (missing shown mid-grey)
        and the Metropolis acceptance rate (None for pseudo-Gibbs)."""
        self.check_feature("complete")
        x = to_unit(self.test_image(i)[None])
        with self.lock:
            result = complete(self.model, x, missing, n=n, steps=steps, method=method, seed=seed,
                              code_prior=self.code_prior)  # fmt: skip
        observed = torch.where(missing, torch.full_like(x[0], 0.5), x[0])
        return observed, result.images[0].cpu(), result.acceptance

    # ---- categorical latents (--model gumbel, JointVAE): a class per group, not a slider ----
    def group_info(self) -> list[dict[str, Any]]:
        """The categorical groups, ranked by KL (top first): ``{group, name, score,
        classes}``, ``name`` and the class names as ``vaelab traverse`` labels them."""
        c = self.model.categories if self.groups else 0
        return [{"group": g, "name": f"cat {g}", "score": round(score, 4),
                 "classes": [f"category {k}" for k in range(c)]}
                for g, score in self.groups]  # fmt: skip

    def classes(self, z: torch.Tensor) -> list[int]:
        """The class of each categorical group of ``z`` ``(D,)`` (its argmax), group 0 first."""
        return explore.group_classes(self.model, z)

    def with_classes(self, z: torch.Tensor, classes: list[int]) -> torch.Tensor:
        """``z`` with group g the one-hot code of ``classes[g]`` (VaelabError if out of range)."""
        return explore.with_classes(self.model, z, classes)
