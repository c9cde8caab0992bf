"""ROAD's noisy linear imputation (Rong et al., 2022), batched in torch.

Each removed pixel takes the weighted mean of its 8 neighbours that lie inside the
image (weight 1/6 for the 4 direct ones, 1/12 for the diagonals), whether those are
kept or removed themselves; then Gaussian noise is added. For the removed pixels this
is one sparse linear system per image and channel. Its matrix is a weighted graph
Laplacian restricted to the removed pixels plus the weights of their kept neighbours,
symmetric and positive definite whenever one pixel is kept, so the conjugate gradient
method solves it exactly (to float tolerance), for every image and channel at once,
with the matrix applied as a 3 x 3 convolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["noisy_linear_imputation", "NEIGHBOUR_WEIGHTS"]

NEIGHBOUR_WEIGHTS = ((1 / 12, 1 / 6, 1 / 12), (1 / 6, 0.0, 1 / 6), (1 / 12, 1 / 6, 1 / 12))


def _neighbours(x, kernel):
    """Weighted sum of each pixel's neighbours inside the image: x (N, C, H, W)."""
    n, c = x.shape[:2]
    return F.conv2d(x.reshape(n * c, 1, *x.shape[2:]), kernel, padding=1).reshape(x.shape)


def noisy_linear_imputation(
    images: torch.Tensor,
    removed: torch.Tensor,
    *,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
    tolerance: float | None = None,
    max_iterations: int | None = None,
) -> torch.Tensor:
    """``images`` (N, C, H, W) with the pixels where ``removed`` (N, H, W) is True
    replaced by the linear imputation plus N(0, noise^2) noise.

    Solves, for the removed pixels x: ``w_in(p) x_p - sum_q w_pq x_q = sum_kept w_pq
    img_q``, where w_in(p) is the total weight of p's neighbours inside the image,
    to a relative residual of ``tolerance`` (1e-12 in float64, 1e-6 otherwise).
    """
    dtype = images.dtype if images.dtype == torch.float64 else torch.float32
    if tolerance is None:
        tolerance = 1e-12 if dtype == torch.float64 else 1e-6
    img = images.to(dtype)
    kernel = torch.tensor(NEIGHBOUR_WEIGHTS, dtype=dtype, device=images.device)[None, None]
    hole = removed[:, None].to(dtype)  # (N, 1, H, W)
    inside = _neighbours(torch.ones_like(hole), kernel)  # w_in: smaller at the border

    def apply(x):  # the system's matrix on x, which lives on the removed pixels
        return hole * (inside * x - _neighbours(hole * x, kernel))

    rhs = hole * _neighbours((1 - hole) * img, kernel)
    x = torch.zeros_like(img)
    residual = rhs - apply(x)
    direction = residual.clone()
    norm = (residual * residual).sum((2, 3), keepdim=True)
    scale = (rhs * rhs).sum((2, 3), keepdim=True).clamp_min(1e-30)
    limit = max_iterations or 10 * (images.shape[2] + images.shape[3]) + 200
    for _ in range(limit):
        if (norm <= tolerance**2 * scale).all():
            break
        step = apply(direction)
        curvature = (direction * step).sum((2, 3), keepdim=True)
        alpha = norm / curvature.where(curvature > 0, torch.ones_like(curvature))
        alpha = alpha.where(norm > tolerance**2 * scale, torch.zeros_like(alpha))
        x = x + alpha * direction
        residual = residual - alpha * step
        new_norm = (residual * residual).sum((2, 3), keepdim=True)
        direction = residual + (new_norm / norm.clamp_min(1e-30)) * direction
        norm = new_norm
    if noise:
        x = x + noise * torch.randn(
            x.shape,
            generator=generator,
            dtype=dtype,
            device="cpu" if generator is None else generator.device,
        ).to(x.device)
    return torch.where(hole.bool(), x, img).to(images.dtype)
