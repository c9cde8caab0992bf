"""Forward-mode CAMs: when the targets outnumber the directions a method needs.

Reverse mode takes one pullback per target: K passes through the part after the layer.
For three methods the map needs much less than the K full gradients, only a Jacobian
of the K scores with respect to a few directions at the layer, which forward mode takes
in one (vmapped) ``jvp`` per direction:

- Grad-CAM: ``mean_S g_c`` is the derivative of the score with respect to an offset
  added to all of channel c, divided by the positions S: C directions (one per channel);
- XGradCAM: ``sum_S g_c A_c`` is the derivative with respect to a scaling of channel c
  (direction ``A`` on channel c, 0 elsewhere): C directions;
- HiResCAM: ``sum_c g_c A_c`` at position s is the derivative with respect to a scaling
  of position s in every channel: S directions (C x S for per-channel maps).

LayerCAM, Grad-CAM++ and the eigen methods apply a non-linearity to the gradient before
it is summed (a ReLU, squares, an SVD), so no few directions carry what they need.

A direction perturbs every example of the batch at once, which gives each example its
own derivative when examples do not interact. In train mode they do (BatchNorm's batch
statistics), so there each example gets directions of its own (B times as many). In eval
mode the first target is also computed in reverse mode and compared: a model that mixes
examples anyway is caught, not explained wrongly.
"""

import math

import torch

from ._checks import GradCamError
from ._grad_cam import vmap_quietly
from ._outputs import flatten, unflatten
from .ops import relu as _relu

__all__ = [
    "FORWARD_METHODS",
    "choose_mode",
    "forward_cams",
    "directions_needed",
    "forward_is_cheaper",
]

FORWARD_METHODS = ("gradcam", "xgradcam", "hirescam")

# One jvp through the part after the layer costs about this share of one pullback (a
# vjp replays the forward's saved graph backwards; measured on ResNets, see
# docs/performance.md). "auto" considers forward mode only when directions x this <
# targets, then weighs it with the forward's re-runs (``forward_is_cheaper``).
JVP_PER_VJP = 0.75


def check_tolerance(eps):
    """rtol of forward mode's check of its first map against reverse mode's, for a map
    dtype whose machine epsilon is ``eps``: 1e-3, or 8 eps for a coarser dtype
    (bfloat16: 0.06); atol is a tenth of it times the reverse map's largest magnitude."""
    return max(1e-3, 8 * eps)


def mixes_examples(call):
    """The GradCamError for ``autodiff='forward'`` when that check fails."""
    return GradCamError(
        f"{call}(..., autodiff='forward'): the model mixes the examples of the batch (the "
        "first target's map differs from reverse mode's), so one direction per channel "
        "cannot serve every example. Use autodiff='reverse'."
    )


def directions_needed(method, shape, sum_channels, coupled):
    """How many jvps ``method`` needs for a layer of ``shape`` (B, C, *S)."""
    batch, channels, positions = shape[0], shape[1], math.prod(shape[2:])
    if method == "hirescam":
        count = positions if sum_channels else channels * positions
    else:
        count = channels
    return count * (batch if coupled else 1)


def forward_is_cheaper(directions, chunk_size, k, forward_seconds, chunk_seconds, chunk_targets):
    """Whether forward mode's estimated time beats reverse mode's, from the seconds the
    call's forward took and the seconds one chunk of ``chunk_targets`` vmapped
    pullbacks took: reverse mode runs ceil(K / chunk_targets) such chunks; forward mode
    runs the whole model once per chunk of directions (the part before the layer has
    no tangent but runs again) and each direction costs ``JVP_PER_VJP`` pullbacks."""
    chunks = math.ceil(directions / (chunk_size or directions))
    per_pullback = chunk_seconds / chunk_targets
    forward = directions * JVP_PER_VJP * per_pullback + chunks * forward_seconds
    return forward < math.ceil(k / chunk_targets) * chunk_seconds


def _coupled(model):
    """Whether the batch's examples interact: a module in train mode (BatchNorm)."""
    return isinstance(model, torch.nn.Module) and any(m.training for m in model.modules())


def choose_mode(autodiff, method, k, shape, sum_channels, model, forward_ok, call):
    """ "forward" or "reverse" for this call; raises for a forward mode that cannot be."""
    if autodiff not in ("auto", "reverse", "forward"):
        raise GradCamError(
            f"{call}(..., autodiff={autodiff!r}): expected 'auto', 'reverse' or 'forward'."
        )
    if autodiff == "reverse":
        return "reverse"
    why = None
    if method not in FORWARD_METHODS:
        why = (
            f"{method} applies a non-linearity to the gradient before summing it, so "
            "no few directions give it; forward mode serves Grad-CAM, XGradCAM and "
            "HiResCAM"
        )
    elif not forward_ok:
        why = (
            "forward mode takes one layer whose activation is one Tensor (B, C, *S) "
            "of the batch, with channels on axis 1"
        )
    if why:
        if autodiff == "forward":
            raise GradCamError(
                f"{call}(..., method={method!r}, autodiff='forward'): {why}. "
                "Use autodiff='reverse' (or 'auto')."
            )
        return "reverse"
    if autodiff == "forward":
        return "forward"
    directions = directions_needed(method, shape, sum_channels, _coupled(model))
    return "forward" if directions * JVP_PER_VJP < k else "reverse"


def _callable_tangents(target_scores, output, tensors, tangents):
    """(k, B) tangents of the callable targets' scores (k may be 0), given the output
    tensors' tangents."""
    _, others, tree = flatten(output)
    rows = [
        torch.func.jvp(
            lambda *ts, target=target: target(unflatten(tree, ts, others)),
            tuple(tensors),
            tuple(tangents),
        )[1]
        for target, index in zip(target_scores.targets, target_scores.indices, strict=True)
        if index is None
    ]
    return torch.stack(rows) if rows else tangents[0].new_zeros(0, tangents[0].shape[0])


def _positions(target_scores):
    """(B, k): where the k index targets read the first output Tensor (k may be 0)."""
    positions = [i for i in target_scores.indices if i is not None]
    return torch.stack(positions, 1) if positions else None


def _jacobian(target_scores, callable_rows, first, positions):
    """(count, K, B): every target's row, in order, from the callable targets' rows
    (count, k, B) and the first output Tensor's tangents (count, B, M), which the index
    targets read at their ``positions`` (a gather: no (K, B, M) masks)."""
    indexed = (
        None
        if positions is None
        else first.gather(2, positions.expand(len(first), -1, -1)).transpose(1, 2)
    )
    if indexed is None:
        return callable_rows
    if callable_rows.shape[1] == 0:
        return indexed
    called, read = iter(callable_rows.unbind(1)), iter(indexed.unbind(1))
    return torch.stack(
        [next(called) if i is None else next(read) for i in target_scores.indices], 1
    )


def forward_cams(
    method, acts, jvp, target_scores, output, tensors, *, sum_channels, relu, coupled, chunk_size
):
    """The K targets' maps (K, B, 1, *S) (or (K, B, C, *S)) of ``method`` from jvps.

    acts: the layer's activation (B, C, *S); jvp: ``tangent -> output tangents``.
    """
    batch, channels, *space = acts.shape
    positions = math.prod(space)
    # summed in at least float32 (hundreds of chunks of bfloat16 sums would compound
    # their rounding), returned in the activation's dtype, as reverse mode's maps are
    summed = torch.promote_types(acts.dtype, torch.float32)
    flat = acts.reshape(batch, channels, positions).to(summed)
    per_channel = method != "hirescam"
    # a direction's shape: what it varies over, broadcast to the activation at the layer
    if per_channel:
        shape = (1, channels) + (1,) * len(space)
    else:
        shape = (1, 1 if sum_channels else channels, *space)
    units = math.prod(shape)
    count = units * (batch if coupled else 1)

    def direction(index):  # (1, *shape[1:]), or (B, ...) with one example's entries
        unit, example = index % units, index // units
        tangent = (torch.arange(units, device=acts.device) == unit).to(acts.dtype).view(shape)
        if coupled:
            mine = (torch.arange(batch, device=acts.device) == example).to(acts.dtype)
            tangent = tangent * mine.view((batch,) + (1,) * (len(shape) - 1))
        return tangent

    def derivative(index):
        # Grad-CAM's direction is an offset of channel c; XGradCAM's and HiResCAM's a
        # scaling of the activation (the act times the direction)
        tangents = jvp(((direction(index),),), scaled=method != "gradcam")
        return (
            _callable_tangents(target_scores, output, tensors, tangents),
            tangents[0].flatten(1),
        )  # (k callables, B), (B, M)

    def rows(indices):  # (K, B, n), or (K, n) in train mode: the chunk's derivatives
        callable_rows, first = vmap_quietly(derivative)(indices)
        jacobian = _jacobian(target_scores, callable_rows, first, read_at)  # (n, K, B)
        # in train mode a row (example, unit) is the derivative of sum_b s_b, as in
        # reverse mode; it belongs to its example alone
        jacobian = jacobian.to(summed)  # a float32 head after a bfloat16 layer, or the reverse
        return jacobian.sum(-1).T if coupled else jacobian.permute(1, 2, 0)

    def scale(a):  # (B, n): what a channel's derivative is divided by to give its weight
        return positions if method == "gradcam" else a.sum(-1) + 1e-7

    def channel_maps(indices, part):  # (K, B, P): the chunk's channels' share of the maps
        if coupled:  # back to (K, B, n), zero outside each row's example
            example = indices // units
            mine = example[:, None] == torch.arange(batch, device=acts.device)
            part = part[:, None, :] * mine.T.to(part.dtype)
            indices = indices % units
        chunk = flat[:, indices]  # (B, n, P)
        return torch.einsum("kbn,bnp->kbp", part / scale(chunk), chunk)

    read_at = _positions(target_scores)
    step = chunk_size or count
    chunks = [
        torch.arange(i, min(i + step, count), device=acts.device) for i in range(0, count, step)
    ]
    if per_channel and sum_channels:  # reduced chunk by chunk: no (K, B, C) Jacobian kept
        maps = sum(channel_maps(indices, rows(indices)) for indices in chunks)[:, :, None]
    else:
        jacobian = torch.cat([rows(indices) for indices in chunks], -1)
        k = jacobian.shape[0]
        jacobian = jacobian.reshape(k, batch, units)  # train mode's rows are (example, unit)
        if per_channel:
            maps = (jacobian / scale(flat))[..., None] * flat  # (K, B, C, P)
        elif sum_channels:
            maps = jacobian[:, :, None, :]  # (K, B, 1, P)
        else:
            maps = jacobian.reshape(k, batch, channels, positions)
    maps = maps.reshape(maps.shape[0], batch, maps.shape[2], *space).to(acts.dtype)
    return _relu(maps) if relu else maps
