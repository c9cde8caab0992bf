"""Every target form -> the cotangents on the model's output that select it.

A target names one score per example; its cotangent is the gradient of the sum of
those scores with respect to the output's floating-point Tensors (one cotangent per
Tensor, see ``_outputs.flatten``). Index targets (Captum's forms) need a Tensor output
and give one-hot cotangents; a callable receives the output exactly as the model
returned it (Tensor, tuple, dict, dataclass, ``ModelOutput``) and gives the VJP of its
score, so non-linear scores are exact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ._checks import GradCamError, _describe
from ._outputs import flatten, tensor_fields, unflatten

__all__ = ["TopK", "top_k", "cotangent", "cotangents", "every_class"]


def every_class(targets, output, call):
    """``targets``, with "all" (every class of a (B, N) output) spelled out as 0..N-1."""
    if not (isinstance(targets, str) and targets == "all"):
        return targets
    _needs_tensor(
        output, call, "targets='all'", "targets=[lambda out, k=k: {scores}[:, k] for k in range(n)]"
    )
    if output.ndim != 2:
        raise GradCamError(
            f"{call}(..., targets='all'): needs class scores (B, N), got an "
            f"output of shape {tuple(output.shape)}."
        )
    return list(range(output.shape[1]))


class TopK:
    """Each example's ``k`` highest-scoring classes, chosen from the same forward pass.

    Pass as ``grad_cam(..., targets=top_k(k))``; the call then returns
    ``(cams, classes)`` with ``classes`` of shape (k, B), best first. For a model that
    returns a structure, ``scores`` picks the (B, N) class scores from it.
    """

    def __init__(self, k, scores=None):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise GradCamError(f"top_k(k={k!r}): expected a positive int.")
        if scores is not None and not callable(scores):
            raise GradCamError(
                f"top_k({k}, scores=...): expected a callable output -> (B, N) scores, "
                f"e.g. lambda out: out.logits; got {_describe(scores)}."
            )
        self.k = k
        self.scores = scores

    def __repr__(self):
        return f"top_k({self.k})"

    def check(self, output, call):
        """Raise unless ``output`` is (B, N) with at least ``k`` classes (any framework)."""
        if output.ndim != 2 or output.shape[1] < self.k:
            raise GradCamError(
                f"{call}(..., targets=top_k({self.k})): needs class scores of shape (B, N) "
                f"with N >= {self.k} classes, got {tuple(output.shape)}."
            )

    def score_tensor(self, output, call):
        """The (B, N) scores the classes are chosen from."""
        if self.scores is None:
            _needs_tensor(
                output,
                call,
                f"targets=top_k({self.k})",
                f"targets=top_k({self.k}, scores=lambda out: {{scores}})",
            )
            return output
        scores = self.scores(output)
        if not isinstance(scores, torch.Tensor):
            raise GradCamError(
                f"{call}(..., targets=top_k({self.k}, scores=...)): scores must return a "
                f"Tensor (B, N), returned {_describe(scores)}."
            )
        return scores

    def classes(self, output, call):
        """(k, B) indices of each example's highest scores."""
        scores = self.score_tensor(output, call)
        self.check(scores, call)
        return torch.topk(scores.detach(), self.k, dim=1).indices.T

    def targets(self, output, call):
        """``(targets, classes)``: k targets for ``targets=``, and the (k, B) classes."""
        classes = self.classes(output, call)
        if self.scores is None:
            return list(classes), classes
        return [_Picked(self.scores, row) for row in classes], classes


class _Picked:
    """The target ``scores(output)[b, classes[b]]`` for each example b."""

    def __init__(self, scores, classes):
        self.scores, self.classes = scores, classes
        self.__name__ = "top_k_class"

    def __call__(self, output):
        scores = self.scores(output)
        return scores[
            torch.arange(scores.shape[0], device=scores.device), self.classes.to(scores.device)
        ]


def top_k(k: int, scores: Callable[[Any], torch.Tensor] | None = None) -> TopK:
    """Each example's ``k`` highest-scoring classes, as ``targets=top_k(k)``.

    scores: for a model that returns a structure, a callable that picks the (B, N)
    class scores from it, e.g. ``top_k(3, scores=lambda out: out.logits)``.
    """
    return TopK(k, scores)


def _fields(output):
    """The output's Tensors, listed for a message: ``out.logits (2, 5) torch.float32``."""
    return (
        "; ".join(f"{path} {tuple(t.shape)} {t.dtype}" for path, t in tensor_fields(output)[:6])
        or "none"
    )


def _needs_tensor(output, call, argument, example):
    """Raise unless the output is a Tensor, showing the callable target to write.

    example: the fix, with ``{scores}`` where the path to the output's first Tensor goes.
    """
    if isinstance(output, torch.Tensor):
        return
    fields = tensor_fields(output)
    scores = fields[0][0] if fields else "out.logits"
    raise GradCamError(
        f"{call}(..., {argument}): an index target needs a model that returns a Tensor "
        f"of scores, but this model returns {type(output).__name__}, whose Tensors are: "
        f"{_fields(output)}. Pass a callable target that picks the scores, e.g. "
        f"{example.format(scores=scores)}, or wrap the model to return the Tensor to "
        "explain."
    )


def check_index(index, output, call, argument):
    """Raise unless ``index`` picks one in-range score per example of ``output``."""
    # Entries and range first, then the count: a mismatch is reported below, not by zip.
    for axis, (i, size) in enumerate(zip(index, output.shape[1:], strict=False), start=1):
        if isinstance(i, bool) or not isinstance(i, int):
            raise GradCamError(
                f"{call}(..., {argument}=...): index entries must be ints, got {_describe(i)}."
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


def _target_name(target):
    return getattr(target, "__name__", type(target).__name__)


def _callable_cotangents(output, target, batch, call, argument):
    """The VJP of a callable target's (B,) score at the output's floating Tensors."""
    tensors, others, tree = flatten(output)
    name = _target_name(target)

    def score_of(*new):
        try:
            score = target(unflatten(tree, new, others))
        except GradCamError:
            raise
        except Exception as error:
            raise GradCamError(
                f"{call}(..., {argument}={name}): the target raised "
                f"{type(error).__name__}: {error} (it was given the model's output, a "
                f"{type(output).__name__}; its Tensors: {_fields(output)})."
            ) from error
        if (
            not isinstance(score, torch.Tensor)
            or not score.is_floating_point()
            or tuple(score.shape) != (batch,)
        ):
            got = (
                f"shape {tuple(score.shape)} and dtype {score.dtype}"
                if isinstance(score, torch.Tensor)
                else _describe(score)
            )
            raise GradCamError(
                f"{call}(..., {argument}={name}): a callable target must map the output "
                f"to one floating-point score per example, shape ({batch},); it returned "
                f"{got}. Reduce to one score per example, e.g. lambda out: out[:, k] (not "
                "out.argmax(1), which has no gradient)."
            )
        return score

    score, vjp_fn = torch.func.vjp(score_of, *tensors)
    return vjp_fn(torch.ones_like(score))


def cotangent(output, target, batch, call="grad_cam", argument="target"):
    """One cotangent per floating Tensor of ``output``, selecting ``target``'s scores.

    batch: the number of examples B (dim 0 of the inputs).
    """
    if callable(target) and not isinstance(target, torch.Tensor):
        return _callable_cotangents(output, target, batch, call, argument)
    shown = (
        f"{argument}={target!r}"
        if target is None or isinstance(target, (int, tuple))
        else f"{argument}=..."
    )
    _needs_tensor(output, call, shown, f"{argument}=lambda out: {{scores}}[:, k]")
    if output.ndim == 0 or output.shape[0] != batch:
        raise GradCamError(
            f"{call}(..., {argument}=...): the model's output has shape "
            f"{tuple(output.shape)}, whose dim 0 is not the batch of {batch} examples. "
            "Give the inputs a batch axis (x[None] for one example), or pass a callable "
            "target that returns one score per example."
        )
    zeros = torch.zeros(output.shape, dtype=output.dtype, device=output.device)
    if target is None:
        if output[0].numel() != 1:
            raise GradCamError(
                f"{call}(..., {argument}=None): without a target the model must return "
                f"one score per example, but its output has shape {tuple(output.shape)}. "
                "Pass target=class_index (or a callable that returns a (B,) score)."
            )
        return (torch.ones_like(zeros),)
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
        zeros[(slice(None),) + target] = 1
        return (zeros,)
    if isinstance(target, list):
        for i, index in enumerate(_per_example(target, output, call, argument)):
            index = index if isinstance(index, tuple) else (index,)
            check_index(index, output, call, f"{argument}[{i}]")
            zeros[(i,) + index] = 1
        return (zeros,)
    raise GradCamError(
        f"{call}(..., {argument}=...): expected None, an int, a tuple of ints, an integer "
        "Tensor, a list of ints or tuples (one per example), or a callable "
        f"output -> (B,) score; got {_describe(target)}."
    )


def cotangents(output, targets, batch, call):
    """A tuple of (K, *tensor.shape) stacks: each target's cotangents, stacked."""
    targets = every_class(targets, output, call)
    if isinstance(targets, (torch.Tensor, str)) or not hasattr(targets, "__len__"):
        raise GradCamError(
            f"{call}(..., targets=...): expected a sequence of targets (a list or "
            f"tuple, each one a valid target), top_k(k) or 'all'; got {_describe(targets)}."
        )
    if len(targets) == 0:
        raise GradCamError(f"{call}(..., targets=[]): expected at least one target.")
    per_target = [
        cotangent(output, target, batch, call, f"targets[{k}]") for k, target in enumerate(targets)
    ]
    return tuple(torch.stack(stack) for stack in zip(*per_target, strict=True))
