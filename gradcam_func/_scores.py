"""The K targets' scores on batches of the model's outputs, for methods and metrics
that score perturbed forwards instead of differentiating (Score-CAM, Ablation-CAM,
deletion curves).

An index target scores the output at its index (``probability=True``: the softmax
probability of that class, for (B, N) outputs); a callable target scores by its value;
``None`` takes the output itself (one score per example).
"""

import torch

from ._checks import GradCamError, _describe
from ._targets import TopK, cotangent, every_class

__all__ = ["TargetScores"]


class TargetScores:
    """Scores of ``targets`` on outputs of copies of the B examples.

    output: the model's output on the B examples, to check the targets against (and
    choose ``top_k``'s classes from). ``targets`` None scores ``target`` alone.
    """

    def __init__(self, output, target, targets, batch, call):
        if target is not None and targets is not None:
            raise GradCamError(f"{call}(..., target=..., targets=...): pass one of them.")
        self.call, self.batch, self.classes = call, batch, None
        self.stacked = targets is not None
        if isinstance(targets, TopK):
            targets, self.classes = targets.targets(output, call)
        targets = every_class(targets, output, call)
        if self.stacked and (
            isinstance(targets, (torch.Tensor, str))
            or not hasattr(targets, "__len__")
            or len(targets) == 0
        ):
            raise GradCamError(
                f"{call}(..., targets=...): expected a non-empty sequence of targets (each "
                f"a valid target) or top_k(k); got {_describe(targets)}."
            )
        self.targets = list(targets) if self.stacked else [target]
        # per target: the (B,) positions it scores in the flattened output, or None (a
        # callable); positions, not one-hot (B, ...) masks: 'all' of 1000 classes would
        # hold K x B x 1000 numbers
        self.indices = []
        for k, t in enumerate(self.targets):
            argument = f"targets[{k}]" if self.stacked else "target"
            if callable(t) and not isinstance(t, torch.Tensor):
                self.indices.append(None)
                self._check_callable(t, output, argument)
            else:
                (one_hot,) = cotangent(output, t, batch, call, argument)
                self.indices.append(one_hot.reshape(batch, -1).argmax(1))

    def _check_callable(self, target, output, argument):
        score = target(output)
        if not isinstance(score, torch.Tensor) or tuple(score.shape) != (self.batch,):
            raise GradCamError(
                f"{self.call}(..., {argument}={getattr(target, '__name__', 'fn')}): a "
                f"callable target must return one score per example, shape "
                f"({self.batch},); it returned {_describe(score)}."
            )

    def __call__(self, output, examples, probability=False):
        """(K, N) scores of N outputs, output row i a copy of example ``examples[i]``."""
        rows = []
        for target, index in zip(self.targets, self.indices, strict=True):
            if index is None:
                rows.append(target(output))
                continue
            values = output.softmax(1) if probability and output.ndim == 2 else output
            flat = values.reshape(len(values), -1)
            rows.append(flat.gather(1, index[examples, None]).squeeze(1))
        return torch.stack(rows)
