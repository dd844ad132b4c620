"""The map of the latent space the browser shows, and the way back from a map point to z.

The map is ``explore.embed`` of the test images' posterior means: the latent itself when
it is 2-D, else PCA or t-SNE. Clicking the map asks for the latent z of a point (u, v) of
the plane; each kind of map has its inverse (``INVERSES``):

* ``z`` (a 1- or 2-D latent): z = (u, v) itself, anywhere, also between the clusters.
* ``pca``: the map is u = V (z - m) with V the two leading principal axes ``(2, D)`` and
  m the mean of the codes. The point of the plane is m + V^T u; the D - 2 coordinates the
  plane drops are filled in with a kernel average of the codes' own off-plane residuals
  r_i = z_i - m - V^T u_i, weighted by w_i = softmax_i(-|u - u_i|^2 / 2h^2). The residual
  is orthogonal to the plane, so V (z(u) - m) = u exactly: the clicked point maps back to
  itself, and the decoding looks like the images near it rather than the blur of the plane.
* ``tsne``: t-SNE has no inverse; z(u) = sum_i w_i z_i, the kernel average of the codes
  near the clicked point (continuous, so dragging decodes smoothly).

The bandwidth h is the median distance of a map point to its 5th nearest neighbour.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from vaelab.evaluation.explore import embed


def kernel_bandwidth(coords: torch.Tensor, k: int = 5, chunk: int = 1024) -> float:
    """Median distance of a point of ``coords`` ``(N, 2)`` to its k-th nearest other point."""
    k = min(k, len(coords) - 1)
    if k < 1:
        return 1.0
    kth = []
    for i in range(0, len(coords), chunk):  # chunks keep memory at chunk * N, not N^2
        d = torch.cdist(coords[i : i + chunk], coords)
        kth.append(d.topk(k + 1, largest=False).values[:, k])  # index 0 is the point itself
    h = float(torch.quantile(torch.cat(kth), 0.5))  # the mean of the middle two when N is even
    return h if h > 0 else 1.0


@dataclass
class LatentMap:
    """Map coordinates ``coords (N, 2)`` of codes ``z (N, D)``, how they were made (``kind``:
    z | pca | tsne; ``prefix`` names the axes) and what the inverse needs."""

    kind: str
    prefix: str
    coords: torch.Tensor  # (N, 2) float64
    z: torch.Tensor  # (N, D) float64
    bandwidth: float
    mean: torch.Tensor | None = None  # pca: m (D,)
    axes: torch.Tensor | None = None  # pca: V (2, D)

    @classmethod
    def fit(cls, z: torch.Tensor, method: str = "pca", seed: int = 0) -> LatentMap:
        """The map of codes ``z`` ``(N, D)``: ``explore.embed`` (``method`` is pca | tsne and
        matters only above 2-D)."""
        coords, prefix = embed(z, method, seed)
        z64 = z.double()
        c = torch.from_numpy(np.ascontiguousarray(coords, dtype=np.float64))
        kind = "z" if z.shape[1] <= 2 else method
        mean = axes = None
        if kind == "pca":
            mean = z64.mean(0)
            # The axes explore.embed projected on (SVD of the centred codes); with them the
            # coordinates are an exact linear function of z (checked by the tests).
            _, _, vt = np.linalg.svd((z64 - mean).numpy(), full_matrices=False)
            axes = torch.zeros(2, z.shape[1], dtype=torch.float64)
            axes[: len(vt[:2])] = torch.from_numpy(vt[:2].copy())  # one code: one axis, then 0
        return cls(kind, prefix, c, z64, kernel_bandwidth(c), mean, axes)

    def weights(self, uv: torch.Tensor) -> torch.Tensor:
        """Kernel weights ``(N,)`` of the map points around ``uv`` ``(2,)``, summing to 1."""
        d2 = ((self.coords - uv) ** 2).sum(1)
        return torch.softmax(-d2 / (2 * self.bandwidth**2), 0)

    def to_latent(self, u: float, v: float) -> torch.Tensor:
        """The latent ``(D,)`` (float32) of the map point (u, v)."""
        uv = torch.tensor([u, v], dtype=torch.float64)
        return INVERSES[self.kind](self, uv).float()

    def to_map(self, z: torch.Tensor) -> tuple[float, float] | None:
        """Where ``z`` ``(D,)`` lies on the map (None for t-SNE, which has no formula)."""
        z = z.double()
        if self.kind == "z":
            return float(z[0]), float(z[1]) if len(z) > 1 else 0.0
        if self.kind == "pca":
            uv = self.axes @ (z - self.mean)
            return float(uv[0]), float(uv[1])
        return None


def _identity(m: LatentMap, uv: torch.Tensor) -> torch.Tensor:
    return uv[: m.z.shape[1]]


def _pca_inverse(m: LatentMap, uv: torch.Tensor) -> torch.Tensor:
    residuals = m.z - m.mean - m.coords @ m.axes  # (N, D), orthogonal to the plane
    return m.mean + uv @ m.axes + m.weights(uv) @ residuals


def _kernel_average(m: LatentMap, uv: torch.Tensor) -> torch.Tensor:
    return m.weights(uv) @ m.z


# map kind -> inverse (map, uv (2,) float64) -> z (D,) float64
INVERSES: dict[str, Callable[[LatentMap, torch.Tensor], torch.Tensor]] = {
    "z": _identity,
    "pca": _pca_inverse,
    "tsne": _kernel_average,
}
