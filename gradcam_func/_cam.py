"""cam: grad_cam's contract with a choice of CAM method and of channel layout."""

import functools

from ._checks import GradCamError
from ._grad_cam import explain
from ._tokens import to_channels_first
from .variants import METHODS

__all__ = ["cam"]


def _method_from(cam_from, acts, grads, *, channel_axis, token_grid, prefix_tokens,
                 relu, sum_channels):
    layout = functools.partial(to_channels_first, channel_axis=channel_axis,
                               token_grid=token_grid, prefix_tokens=prefix_tokens)
    return cam_from(layout(acts), layout(grads), relu=relu, sum_channels=sum_channels)


def cam(model, layer, inputs, target=None, *, method="gradcam", targets=None,
        additional_forward_args=None, params=None, attribute_to_layer_input=False,
        relu=False, sum_channels=True, chunk_size=None, channel_axis=1, token_grid=None,
        prefix_tokens=0):
    """A CAM of ``model`` at ``layer`` by ``method``, with ``grad_cam``'s contract.

    method: "gradcam" (equal to ``grad_cam``), "gradcam++", "xgradcam", "hirescam" or
    "layercam" (see ``gradcam_func.variants``). Everything else as in ``grad_cam``:
    targets (K in one forward), top_k, params, chunk_size, tuple layers.
    channel_axis=-1 treats a (B, T, D) token layer's D as the channels: (B, 1, T);
    token_grid=(h, w) with prefix_tokens=n drops n leading tokens (class token) and
    lays the rest on an (h, w) grid: (B, 1, h, w).
    """
    if method not in METHODS:
        raise GradCamError(
            f"cam(..., method={method!r}): expected one of {', '.join(map(repr, METHODS))}."
        )
    cam_from = functools.partial(
        _method_from, METHODS[method], channel_axis=channel_axis, token_grid=token_grid,
        prefix_tokens=prefix_tokens, relu=relu, sum_channels=sum_channels)
    return explain(cam_from, model, layer, inputs, target, targets=targets,
                   additional_forward_args=additional_forward_args, params=params,
                   attribute_to_layer_input=attribute_to_layer_input,
                   chunk_size=chunk_size, call="cam")
