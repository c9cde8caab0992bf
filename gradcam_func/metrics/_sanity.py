"""Model-parameter randomization (Adebayo et al., 2018): does the CAM depend on the
weights it claims to explain?

Layers are randomized from the output down, cumulatively ("cascading"), or one at a
time ("independent"), and each randomized CAM is compared with the original. A CAM
that stays the same under random weights explains the input, not the model. Random
weights are passed through ``params=`` (never by copying or changing the model), and
several draws run at once under ``vmap`` where the model allows it.

Each randomized weight is drawn from N(0, rms^2), rms the root mean square of the
original tensor, so scales match; a tensor of zeros (a fresh bias) stays zero.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .._checks import GradCamError, as_tensor_tuple, prepare_model
from .._grad_cam import grad_cam
from .._split import model_state, run
from .._types import Explainer, Inputs, Layer, Target
from ..ops import normalize

__all__ = ["parameter_randomization", "Randomization", "rank_correlation", "ssim"]

Randomization = namedtuple("Randomization", "names cams spearman spearman_abs ssim")


def _torchmetrics(call):
    """torchmetrics' functional image and regression metrics (the ``metrics`` extra)."""
    try:
        from torchmetrics.functional import image, regression
    except ImportError as error:
        raise ImportError(
            f"{call}: the rank correlation and SSIM come from torchmetrics; install it "
            "with pip install 'gradcam_func[metrics]' (or pip install torchmetrics)."
        ) from error
    return image, regression


def rank_correlation(maps: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation of each map with its reference, over positions.

    maps, reference: (N, *S) -> (N,). Ties get their mean rank.
    """
    _, regression = _torchmetrics("rank_correlation")
    return regression.spearman_corrcoef(
        maps.flatten(1).T.double(), reference.flatten(1).T.double()
    ).reshape(-1)


def ssim(maps: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """SSIM of each map with its reference after scaling both to [0, 1] per map.

    maps, reference: (N, 1, H, W) (or (N, 1, D, H, W)) -> (N,), each side at least 3.
    The Gaussian window has sigma 1.5 (11 pixels wide), scaled down to fit a smaller
    map: sigma 1.5 * r / 5 for a window of 2r + 1 pixels, r = (side - 1) // 2.
    """
    side = min(maps.shape[2:])
    if side < 3:
        raise GradCamError(
            f"ssim(maps=...): SSIM needs maps at least 3 wide, got shape {tuple(maps.shape)}."
        )
    image, _ = _torchmetrics("ssim")
    sigma = 1.5 * min(5, (side - 1) // 2) / 5
    a, b = normalize(maps.float()), normalize(reference.float())
    return image.structural_similarity_index_measure(
        a, b, data_range=1.0, sigma=sigma, reduction="none"
    )


def _modules_in_call_order(model, args, call):
    """Names of the modules holding parameters of their own, in the order the forward
    calls them (one forward under no_grad on cloned buffers; hooks removed after)."""
    order = []
    handles = [
        module.register_forward_pre_hook(lambda m, _, name=name: order.append(name))
        for name, module in model.named_modules()
        if any(True for _ in module.parameters(recurse=False))
    ]
    try:
        with torch.no_grad():
            run(model, model_state(model, None), args, call)
    finally:
        for handle in handles:
            handle.remove()
    return list(dict.fromkeys(order))


def _stages(model, modules, args, call):
    """``[(name, [parameter names])]`` from the output down (or as given)."""
    if modules is None:
        names = _modules_in_call_order(model, args, call)[::-1]
    else:
        known = {id(m): n for n, m in model.named_modules()}
        names = [known.get(id(m)) if isinstance(m, nn.Module) else m for m in modules]
        submodules = dict(model.named_modules())
        for given, name in zip(modules, names, strict=True):
            if name not in submodules:
                raise GradCamError(
                    f"{call}(..., modules=[..., {given!r}, ...]): not a submodule of the "
                    "model; pass modules or names from model.named_modules()."
                )
    stages = []
    for name in names:
        prefix = f"{name}." if name else ""
        params = [p for p, _ in model.named_parameters() if p.startswith(prefix)]
        if params:
            stages.append((name, params))
    return stages


def parameter_randomization(
    model: nn.Module,
    layer: Layer,
    inputs: Inputs,
    target: Target = None,
    *,
    explainer: Explainer = grad_cam,
    mode: str = "cascading",
    modules: Sequence[str] | None = None,
    draws: int = 1,
    generator: torch.Generator | None = None,
    additional_forward_args: Any = None,
) -> Randomization:
    """The CAM of ``explainer`` under randomized weights, and its similarity to the
    original: ``Randomization(names, cams, spearman, spearman_abs, ssim)``.

    explainer: a function with ``grad_cam``'s signature (any ``cam`` method, your own);
    mode: "cascading" (stage l randomizes the modules of stages 0..l) or "independent"
    (only stage l's); modules: the stages, as modules or names (default: every module
    with parameters of its own, from the output down, in the order the forward calls
    them). Returns names (L,), cams (L, draws, B, 1, *s), and per stage, draw and
    example: Spearman's rank correlation of the map and of its absolute value with the
    original's, and SSIM at the CAM's own resolution (2-D and 3-D maps at least 3 wide;
    else None), each (L, draws, B).
    """
    call = "parameter_randomization"
    if mode not in ("cascading", "independent"):
        raise GradCamError(f"{call}(..., mode={mode!r}): expected 'cascading' or 'independent'.")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise GradCamError(f"{call}(..., draws={draws!r}): expected a positive int.")
    model = prepare_model(model, call)
    if not isinstance(model, nn.Module):
        raise GradCamError(
            f"{call}(model=...): randomizing weights needs an nn.Module, "
            f"got {type(model).__name__}."
        )
    extra = (
        ()
        if additional_forward_args is None
        else (
            additional_forward_args
            if isinstance(additional_forward_args, tuple)
            else (additional_forward_args,)
        )
    )
    args = as_tensor_tuple(inputs, call) + extra
    kwargs = dict(additional_forward_args=additional_forward_args)
    weights = dict(model.named_parameters())
    # params= also for the original: a train-mode model's buffers stay as they are
    original = explainer(model, layer, inputs, target, params=weights, **kwargs).detach()
    stages = _stages(model, modules, args, call)
    generator = generator or torch.Generator(device=original.device).manual_seed(0)

    def draw(names):
        """``draws`` random copies of the named parameters, stacked on axis 0."""
        stacked = {}
        for name in names:
            w = weights[name].detach()
            rms = w.pow(2).mean().sqrt()
            noise = torch.randn(
                (draws, *w.shape), generator=generator, dtype=w.dtype, device=w.device
            )
            stacked[name] = noise * rms
        return stacked

    def explain(params):
        return explainer(model, layer, inputs, target, params=params, **kwargs)

    per_stage: list[torch.Tensor] = []
    randomized: list[str] = []
    for name, params in stages:
        randomized = randomized + params if mode == "cascading" else params
        stacked = draw(randomized)
        try:
            per_stage.append(torch.func.vmap(explain)(stacked).detach())
        except Exception:  # noqa: BLE001
            # The model does not run under vmap (train-mode BatchNorm, data-dependent
            # code): one draw at a time, where a real error shows again.
            per_stage.append(
                torch.stack(
                    [explain({k: v[d] for k, v in stacked.items()}) for d in range(draws)]
                ).detach()
            )
    cams = torch.stack(per_stage)  # (L, draws, B, 1, *s)
    flat = cams.flatten(0, 2)  # (L * draws * B, 1, *s)
    reference = original.expand(cams.shape).flatten(0, 2)
    shape = cams.shape[:3]
    spearman = rank_correlation(flat[:, 0], reference[:, 0]).reshape(shape)
    spearman_abs = rank_correlation(flat[:, 0].abs(), reference[:, 0].abs()).reshape(shape)
    similarity = None
    if flat.ndim in (4, 5) and min(flat.shape[2:]) >= 3:
        similarity = ssim(flat, reference).reshape(shape)
    return Randomization([name for name, _ in stages], cams, spearman, spearman_abs, similarity)
