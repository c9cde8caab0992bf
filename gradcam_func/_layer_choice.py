"""``layer=None``: the layer gradcam_func picks when none is named, and says which.

- A vision transformer (the model calls attention modules and its last spatial map comes
  before them): the norm that opens the last block, the LayerNorm called last before
  the last attention call (``blocks[-1].norm1``, ``layernorm_before``, ``ln_1``). The
  last block's output feeds only the class token's head, so its patch tokens get no
  gradient; its first norm still sees every token.
- A CNN: the last module whose output is a spatial map, (B, C, *S) with every side
  above 1: the last stage (``layer4``), before the global pooling.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from ._checks import GradCamError
from ._split import _on_meta, model_state, run
from ._types import Inputs

__all__ = ["default_layer", "LayerChoiceWarning"]


class LayerChoiceWarning(UserWarning):
    """Says which layer ``layer=None`` picked (filter it once you have read it)."""


def _is_attention(module):
    return isinstance(module, nn.MultiheadAttention) or "Attention" in type(module).__name__


def _is_norm(module):
    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith(
        ("LayerNorm", "RMSNorm")
    )


def _trace(model, args, call):
    """``(started, spatial)``: module names in the order their calls start, and the
    names of those that returned a spatial map (B, C, *S) of the batch, every side > 1,
    in the order they end."""
    started, spatial = [], []
    batch = args[0].shape[0]
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue
        handles.append(
            module.register_forward_pre_hook(lambda m, a, name=name: started.append(name))
        )
        handles.append(
            module.register_forward_hook(
                lambda m, a, out, name=name: (
                    spatial.append(name)
                    if isinstance(out, torch.Tensor)
                    and out.ndim >= 4
                    and out.shape[0] == batch
                    and min(out.shape[2:]) > 1
                    else None
                )
            )
        )
    try:
        with torch.no_grad():
            try:
                run(model, _on_meta(model_state(model, None)), _on_meta(args), call)
            except Exception:  # noqa: BLE001 - no meta kernels: run it for real
                started.clear()
                spatial.clear()
                run(model, model_state(model, None), args, call)
    finally:
        for handle in handles:
            handle.remove()
    return started, spatial


def default_layer(
    model: nn.Module,
    inputs: Inputs,
    *,
    additional_forward_args: Any = None,
    call: str = "default_layer",
) -> tuple[str, str]:
    """``(name, reason)``: the layer ``layer=None`` explains (see the module's rules).

    inputs as ``grad_cam`` takes them. One forward pass (on the meta device when the
    model allows), which leaves the model as it was.
    """
    if not isinstance(model, nn.Module):
        raise GradCamError(
            f"{call}(model=...): picking a layer needs an nn.Module; pass the layer yourself."
        )
    args = (inputs if isinstance(inputs, tuple) else (inputs,)) + (
        ()
        if additional_forward_args is None
        else additional_forward_args
        if isinstance(additional_forward_args, tuple)
        else (additional_forward_args,)
    )
    if isinstance(args[0], torch.Tensor) and args[0].shape[0] == 1:
        # a batch of 2 tells the batch axis apart from a module's leading 1 (a bias table)
        args = tuple(
            a.expand(2, *a.shape[1:])
            if isinstance(a, torch.Tensor) and a.ndim and a.shape[0] == 1
            else a
            for a in args
        )
    modules = dict(model.named_modules())
    started, spatial = _trace(model, args, call)
    attention = [i for i, name in enumerate(started) if _is_attention(modules[name])]
    last_spatial = max((started.index(name) for name in spatial), default=-1)
    if attention and last_spatial < attention[-1]:
        norms = [name for name in started[: attention[-1]] if _is_norm(modules[name])]
        if norms:
            return norms[-1], (
                "the norm that opens the last transformer block, whose "
                "patch tokens all still reach the output"
            )
    if spatial:
        return spatial[-1], "the last spatial feature map, before the global pooling"
    raise GradCamError(
        f"{call}(model, ...): found no spatial feature map and no transformer block to "
        "explain; pass layer= (a name from model.named_modules())."
    )


def choose_layer(model, layer, args, call):
    """``layer``, or for None the default layer, with a LayerChoiceWarning naming it."""
    if layer is not None:
        return layer
    name, reason = default_layer(model, args, call=call)
    warnings.warn(
        f"{call}(..., layer=None): explaining {name!r}, {reason}. Pass "
        f"layer={name!r} to choose it yourself.",
        LayerChoiceWarning,
        stacklevel=4,
    )
    return name
