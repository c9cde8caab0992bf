"""What every metric takes: CAMs from any source, the model's inputs, and targets.

CAMs may come from gradcam_func, Captum (Tensors) or pytorch-grad-cam (NumPy arrays),
shaped (B, 1, *s) or (B, *s) for one target, (K, B, 1, *s) or (K, B, *s) with
``targets``; they are brought to (K, B, 1, *S) at the input's size S. Scores come from
batched forwards under ``no_grad`` that leave the model as it was (buffers are cloned).
"""

import numpy as np
import torch

from .._checks import GradCamError, _describe, as_args_tuple, prepare_model
from .._interpolate import interpolate
from .._scores import TargetScores
from .._split import model_state, run

__all__ = ["cam_stack", "Scorer", "check_positive", "check_image_batch", "grid_rows"]


def grid_rows(*sizes, device=None):
    """The index along each axis of every cell of a (*sizes) grid, flattened in order:
    ``grid_rows(K, B)`` gives the target and the example of each of K * B rows."""
    grid = torch.meshgrid(*(torch.arange(n, device=device) for n in sizes), indexing="ij")
    return tuple(axis.flatten() for axis in grid)


def check_positive(call, name, value):
    """Raise unless ``value`` is a positive int (steps, batch sizes)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GradCamError(f"{call}(..., {name}={value!r}): expected a positive int.")


def check_image_batch(inputs, call):
    """``inputs`` must be one Tensor (B, C, *S) with 1 to 3 spatial axes."""
    if not isinstance(inputs, torch.Tensor) or not 3 <= inputs.ndim <= 5:
        got = _describe(inputs)
        raise GradCamError(
            f"{call}(model, inputs=...): expected one Tensor (B, C, *S) with 1 to 3 "
            f"spatial axes (a batch of signals, images or volumes), got {got}."
        )
    return inputs


def cam_stack(cams, batch, size, stacked, call, argument="cams", device=None):
    """``(stack, stacked)``: the CAMs as a float Tensor (K, B, 1, *size), upsampled
    (n-linear) to ``size``, and whether they came with a K axis.

    batch: B; size: the spatial size S of the inputs (or masks); stacked: whether the
    CAMs carry a leading K axis (``targets=`` was given); None tells from the shape:
    (K, B, 1, *s), and (K, B, *s) with K != B, are stacks.
    """
    spatial = len(size)
    if isinstance(cams, np.ndarray):
        cams = torch.from_numpy(np.ascontiguousarray(cams))
    if not isinstance(cams, torch.Tensor):
        raise GradCamError(
            f"{call}(..., {argument}=...): expected a Tensor or NumPy array of CAMs, got "
            f"{_describe(cams)}."
        )
    cams = cams.detach().to(device, torch.float32 if not cams.is_floating_point() else cams.dtype)
    if stacked is None:
        stacked = cams.ndim == spatial + 3 or (
            cams.ndim == spatial + 2 and cams.shape[1] == batch and cams.shape[0] != batch
        )
    lead = 2 if stacked else 1  # (K, B) or (B)
    if cams.ndim == lead + spatial:  # no channel axis (pytorch-grad-cam's (B, H, W))
        cams = cams.unsqueeze(lead)
    expected = "(K, B, 1, *s)" if stacked else "(B, 1, *s)"
    if cams.ndim != lead + 1 + spatial or cams.shape[lead - 1] != batch or cams.shape[lead] != 1:
        raise GradCamError(
            f"{call}(..., {argument}=...): expected CAMs of shape {expected} (or without "
            f"the 1) for a batch of {batch} with {spatial} spatial axes {tuple(size)}, "
            f"got {tuple(cams.shape)}."
            + (" With targets=, stack the K targets' CAMs on a new axis 0." if stacked else "")
        )
    stack = cams if stacked else cams[None]
    k = stack.shape[0]
    size = tuple(size)
    if tuple(stack.shape[3:]) != size:
        stack = interpolate(stack.flatten(0, 1), size, "linear").unflatten(0, (k, batch))
    return stack, stacked


class Scorer:
    """Scores of each target on batches of perturbed copies of the inputs.

    Index targets score the softmax probability of their class for (B, N) outputs (the
    raw value for other shapes); callables their value; ``None`` the output itself.
    Row i of a batch is a copy of example ``bs[i]`` scored for target ``ks[i]``.
    """

    def __init__(self, model, inputs, target, targets, call, additional_forward_args=None):
        self.call = call
        self.model = prepare_model(model, call)
        self.state = model_state(self.model, None)
        self.extra = as_args_tuple(additional_forward_args)
        output = self.forward(inputs)
        batch = inputs.shape[0]
        self.target_scores = TargetScores(output, target, targets, batch, call)
        self.stacked = self.target_scores.stacked
        self.targets = self.target_scores.targets
        examples = torch.arange(batch, device=inputs.device)
        self.clean = self.target_scores(output, examples, probability=True)  # (K, B)

    def forward(self, x):
        with torch.no_grad():
            return run(self.model, self.state, (x, *self.extra), self.call)[0]

    def scores(self, output, ks, bs):
        """(n,) scores of the rows of ``output``: row i is example bs[i], target ks[i]."""
        every = self.target_scores(output, bs, probability=True)  # (K, n)
        return every.gather(0, ks[None]).squeeze(0)

    def __call__(self, batch_inputs, ks, bs, batch_size):
        """Scores of every row of ``batch_inputs``, run ``batch_size`` rows at a time."""
        out = []
        for start in range(0, len(ks), batch_size):
            stop = start + batch_size
            out.append(
                self.scores(self.forward(batch_inputs(start, stop)), ks[start:stop], bs[start:stop])
            )
        return torch.cat(out)
