"""Token layers (B, T, D) laid out as channels-first maps before any CAM is computed.

Captum treats axis 1 of every activation as channels. For a transformer block's
(B, T, D) output that makes tokens the channels and averages the gradient over D,
which after a LayerNorm is close to zero, so the CAM is rounding noise. Moving D to
axis 1 makes the embedding dimensions the channels and the tokens the positions, and
patch tokens reshaped to their (h, w) grid give a spatial map.
"""

from array_api_compat import array_namespace

from ._checks import GradCamError

__all__ = ["to_channels_first"]


def to_channels_first(x, channel_axis=1, token_grid=None, prefix_tokens=0):
    """x with channels on axis 1: (B, C, *S).

    channel_axis: where the channels are in x (1, or -1 for (B, T, D) token layers).
    token_grid: (h, w) to reshape the tokens of a (B, T, D) activation, after dropping
    the first ``prefix_tokens`` (class token, registers), into (B, D, h, w).
    """
    xp = array_namespace(x)
    if token_grid is not None:
        h, w = token_grid
        if x.ndim != 3 or x.shape[1] - prefix_tokens != h * w:
            raise GradCamError(
                f"cam(..., token_grid={tuple(token_grid)}, prefix_tokens={prefix_tokens}): "
                f"expected a token activation (B, T, D) with T - prefix_tokens = {h * w}, "
                f"got shape {tuple(x.shape)}."
            )
        x = xp.reshape(x[:, prefix_tokens:, :], (x.shape[0], h, w, x.shape[2]))
        channel_axis = -1
    source = channel_axis % x.ndim
    if source == 1:
        return x
    rest = [axis for axis in range(1, x.ndim) if axis != source]
    return xp.permute_dims(x, (0, source, *rest))
