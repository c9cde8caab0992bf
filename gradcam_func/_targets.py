"""Every target form -> the cotangent on the model's output that selects it.

A target names one score per example; its cotangent is the gradient of the sum of
those scores with respect to the output, shaped like the output (B, ...). Index
targets (Captum's forms) give one-hot cotangents; a callable gives the VJP of its
score at the output, so non-linear scores are exact.
"""

import torch

from ._checks import GradCamError, _describe

__all__ = ["TopK", "top_k", "cotangent", "cotangents"]


class TopK:
    """Each example's ``k`` highest-scoring classes, chosen from the same forward pass.

    Pass as ``grad_cam(..., targets=top_k(k))``; the call then returns
    ``(cams, classes)`` with ``classes`` of shape (k, B), best first.
    """

    def __init__(self, k):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise GradCamError(f"top_k(k={k!r}): expected a positive int.")
        self.k = k

    def __repr__(self):
        return f"top_k({self.k})"

    def check(self, output, call):
        """Raise unless ``output`` is (B, N) with at least ``k`` classes (any framework)."""
        if output.ndim != 2 or output.shape[1] < self.k:
            raise GradCamError(
                f"{call}(..., targets=top_k({self.k})): needs an output of shape (B, N) "
                f"with N >= {self.k} classes, got {tuple(output.shape)}."
            )

    def classes(self, output, call):
        """(k, B) indices of each example's highest scores in a (B, N) output."""
        self.check(output, call)
        return torch.topk(output.detach(), self.k, dim=1).indices.T


def top_k(k):
    """Each example's ``k`` highest-scoring classes, as ``targets=top_k(k)``."""
    return TopK(k)


def check_index(index, output, call, argument):
    """Raise unless ``index`` picks one in-range score per example of ``output``."""
    for axis, (i, size) in enumerate(zip(index, output.shape[1:]), start=1):
        if isinstance(i, bool) or not isinstance(i, int):
            raise GradCamError(
                f"{call}(..., {argument}=...): index entries must be ints, got "
                f"{_describe(i)}."
            )
        if not -size <= i < size:
            raise GradCamError(
                f"{call}(..., {argument}={index if len(index) > 1 else index[0]!r}): "
                f"index {i} is out of range for axis {axis} of the model's output, which "
                f"has shape {tuple(output.shape)}."
            )
    if len(index) != output.ndim - 1:
        raise GradCamError(
            f"{call}(..., {argument}={index!r}): has {len(index)} indices, but selecting "
            f"one score per example of an output of shape {tuple(output.shape)} needs "
            f"exactly {output.ndim - 1} (one per axis after the batch). Pass a callable "
            "target to combine several scores."
        )


def _per_example(target, output, call, argument):
    batch = output.shape[0]
    if len(target) != batch:
        raise GradCamError(
            f"{call}(..., {argument}=...): a per-example target needs one entry per "
            f"example: got {len(target)} entries for a batch of {batch}."
        )
    return target


def cotangent(output, target, call="grad_cam", argument="target"):
    """The cotangent (shaped like ``output``) that selects ``target``'s scores."""
    batch = output.shape[0]
    zeros = torch.zeros(output.shape, dtype=output.dtype, device=output.device)
    if target is None:
        if output.ndim == 0 or output[0].numel() != 1:
            raise GradCamError(
                f"{call}(..., {argument}=None): without a target the model must return "
                f"one score per example, but its output has shape {tuple(output.shape)}. "
                "Pass target=class_index (or a callable that returns a (B,) score)."
            )
        return torch.ones_like(zeros)
    if callable(target) and not isinstance(target, torch.Tensor):
        score, vjp_fn = torch.func.vjp(target, output)
        if not isinstance(score, torch.Tensor) or tuple(score.shape) != (batch,):
            shape = tuple(score.shape) if isinstance(score, torch.Tensor) else type(score)
            raise GradCamError(
                f"{call}(..., {argument}={getattr(target, '__name__', 'fn')}): a callable "
                f"target must map the output {tuple(output.shape)} to one score per "
                f"example, shape ({batch},); it returned {shape}."
            )
        return vjp_fn(torch.ones_like(score))[0]
    if isinstance(target, torch.Tensor):
        if target.numel() == 1 and not target.is_floating_point():
            target = int(target.item())
        elif target.ndim == 1 and not target.is_floating_point():
            target = target.tolist()
        else:
            raise GradCamError(
                f"{call}(..., {argument}=...): a Tensor target must hold one integer "
                f"index, or one per example (shape ({batch},)); got {_describe(target)}."
            )
    if isinstance(target, int) and not isinstance(target, bool):
        target = (target,)
    if isinstance(target, tuple):
        check_index(target, output, call, argument)
        zeros[(slice(None), *target)] = 1
        return zeros
    if isinstance(target, list):
        for i, index in enumerate(_per_example(target, output, call, argument)):
            index = index if isinstance(index, tuple) else (index,)
            check_index(index, output, call, f"{argument}[{i}]")
            zeros[(i, *index)] = 1
        return zeros
    raise GradCamError(
        f"{call}(..., {argument}=...): expected None, an int, a tuple of ints, an integer "
        "Tensor, a list of ints or tuples (one per example), or a callable "
        f"output -> (B,) score; got {_describe(target)}."
    )


def cotangents(output, targets, call="grad_cam"):
    """(K, *output.shape): one cotangent per target in ``targets``."""
    if isinstance(targets, (torch.Tensor, str)) or not hasattr(targets, "__len__"):
        raise GradCamError(
            f"{call}(..., targets=...): expected a sequence of targets (a list or "
            f"tuple, each one a valid target) or top_k(k); got {_describe(targets)}."
        )
    if len(targets) == 0:
        raise GradCamError(f"{call}(..., targets=[]): expected at least one target.")
    return torch.stack([
        cotangent(output, target, call, f"targets[{k}]")
        for k, target in enumerate(targets)
    ])
