"""Token layers (B, T, D) laid out as channels-first maps before any CAM is computed.

Captum treats axis 1 of every activation as channels. For a transformer block's
(B, T, D) output that makes tokens the channels and averages the gradient over D,
which after a LayerNorm is close to zero, so the CAM is rounding noise. Moving D to
axis 1 makes the embedding dimensions the channels and the tokens the positions, and
patch tokens reshaped to their (h, w) grid give a spatial map.
"""

from array_api_compat import array_namespace

from ._checks import GradCamError

__all__ = ["to_channels_first", "infer_token_grid"]

MAX_PREFIX_TOKENS = 8  # a class token, a distillation token, registers


def infer_token_grid(tokens, image_size):
    """``(h, w, prefix)``: the grid of patch tokens among ``tokens`` for an image of
    ``image_size`` (H, W): the one way to write tokens = prefix + h * w with
    0 <= prefix <= 8 and square patches of a whole number of pixels (H / h = W / w).
    Raises GradCamError when there is none, or more than one, showing the explicit
    ``token_grid=`` call to make instead."""
    height, width = image_size
    found = []
    for prefix in range(MAX_PREFIX_TOKENS + 1):
        count = tokens - prefix
        for h in range(1, count + 1):
            w = count // h
            if count % h == 0 and height % h == 0 and width % w == 0 and height // h == width // w:
                found.append((h, w, prefix))
    if len(found) == 1:
        return found[0]
    # At most three grids fit: a patch size s gives h * w = H * W / s**2, so four sizes
    # span at least 15 counts, more than the nine prefixes 0..8 reach.
    shown = "; ".join(f"token_grid=({h}, {w}), prefix_tokens={p}" for h, w, p in found)
    raise GradCamError(
        f"cam(..., token_grid='auto'): {tokens} tokens for a {height} x {width} image "
        + (
            "fit no grid of the image's shape after 0 to 8 prefix tokens"
            if not found
            else f"fit {len(found)} grids ({shown})"
        )
        + ". Pass token_grid=(h, w) and prefix_tokens=n yourself."
    )


def to_channels_first(x, channel_axis=1, token_grid=None, prefix_tokens=0, image_size=None):
    """x with channels on axis 1: (B, C, *S).

    channel_axis: where the channels are in x (1, or -1 for (B, T, D) token layers).
    token_grid: (h, w) to reshape the tokens of a (B, T, D) activation, after dropping
    the first ``prefix_tokens`` (class token, registers), into (B, D, h, w); "auto"
    infers both from the number of tokens and ``image_size`` (``infer_token_grid``).
    """
    xp = array_namespace(x)
    if token_grid == "auto":
        if x.ndim != 3 or image_size is None or len(image_size) != 2:
            raise GradCamError(
                f"cam(..., token_grid='auto'): needs a token activation (B, T, D) and an "
                f"image input (B, C, H, W); got an activation of shape {tuple(x.shape)}"
                + (f" and inputs of size {tuple(image_size)}" if image_size else "")
                + ". Pass token_grid=(h, w) and prefix_tokens=n yourself."
            )
        h, w, prefix_tokens = infer_token_grid(x.shape[1], image_size)
        token_grid = (h, w)
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
