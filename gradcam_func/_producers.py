"""Where a tensor of the forward pass was made, so it can be perturbed at its source.

Captum differentiates a score with respect to the *tensor* a layer receives: every path
from that tensor to the score counts, including uses outside the layer (a residual
shortcut, sibling branches that read it before the layer runs, ``attn(x, x, x)``). A
perturbation added when the layer is called would miss the uses before the call and
beside it. So the perturbation is added where the tensor is made instead:

- ``("input", i)``: the model's i-th positional argument;
- ``("state", name)``: a parameter or buffer, swapped in through ``functional_call``;
- ``("op", n, item)``: the result (or the ``item``-th result) of the n-th torch function
  call of the forward, counted by the ``Ops`` mode below.

Calls are numbered by a ``TorchFunctionMode``, which sees every torch function and
Tensor method the model calls, in the same order on every run with the same inputs. An
in-place call (``relu_``, ``+=``) makes a new version of a tensor, so it counts as its
maker; a call that returns its input unchanged (``contiguous`` of a contiguous tensor,
``to`` the same dtype) does not. The split checks on every run that the layer really
received the perturbed tensor, so a forward that runs differently is caught, not used.
"""

import contextlib
import weakref

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["Ops", "source_of"]


def _tensor_items(result):
    """``(item, tensor)`` for a call's Tensor result: item None, or its tuple index."""
    if isinstance(result, torch.Tensor):
        return [(None, result)]
    if isinstance(result, (tuple, list)):
        return [(i, r) for i, r in enumerate(result) if isinstance(r, torch.Tensor)]
    return []


class Ops(TorchFunctionMode):
    """Numbers the torch function calls of one forward and records who made each tensor.

    perturb: ``{(n, item): change}``; the n-th call's result (or its ``item``-th entry)
    is replaced by ``change(result)``, and the new tensor is kept in
    ``perturbed[(n, item)]``.
    """

    def __init__(self, perturb=None):
        super().__init__()
        self.count = 0
        self.perturb = perturb or {}
        self.perturbed = {}
        self._made = {}  # id(tensor) -> (source, weakref, version)
        self._paused = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if self._paused:
            return result
        n = self.count
        self.count += 1
        items = _tensor_items(result)
        if self.perturb:
            result, items = self._perturb(n, result, items)
        for item, tensor in items:
            known = self._made.get(id(tensor))
            if known is None or known[1]() is not tensor or known[2] != tensor._version:
                self._made[id(tensor)] = (("op", n, item), weakref.ref(tensor), tensor._version)
        return result

    def _perturb(self, n, result, items):
        chosen = {item: self.perturb[(n, item)] for item, _ in items if (n, item) in self.perturb}
        if not chosen:
            return result, items
        with self.paused():
            new = {item: chosen[item](tensor) for item, tensor in items if item in chosen}
        self.perturbed.update({(n, item): tensor for item, tensor in new.items()})
        if None in new:
            return new[None], [(None, new[None])]
        entries = [new.get(i, entry) for i, entry in enumerate(result)]
        result = type(result)(entries) if not hasattr(result, "_fields") else type(result)(*entries)
        return result, _tensor_items(result)

    def made(self, tensor):
        """The source ``("op", n, item)`` of ``tensor``, or None if no call made it as is."""
        known = self._made.get(id(tensor))
        if known is None or known[1]() is not tensor or known[2] != tensor._version:
            return None
        return known[0]

    @contextlib.contextmanager
    def paused(self):
        """Calls made inside (gradcam_func's own, in hooks) are neither counted nor changed."""
        previous, self._paused = self._paused, True
        try:
            yield
        finally:
            self._paused = previous


def source_of(tensor, ops, args, state):
    """Where ``tensor`` came from: an op of ``ops``, a model argument or a state tensor.

    args: the model's positional arguments; state: ``{name: tensor}`` as swapped in.
    Returns None when it came from none of them.
    """
    made = ops.made(tensor)
    if made is not None:
        return made
    for i, arg in enumerate(args):
        if arg is tensor:
            return ("input", i)
    for name, value in state.items():
        if value is tensor:
            return ("state", name)
    return None
