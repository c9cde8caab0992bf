"""Nested values (a model's output, a layer's input or output) taken apart and rebuilt.

Models return Tensors, tuples, dicts, namedtuples, dataclasses or HuggingFace
``ModelOutput``s; layers receive and return the same kinds. ``torch.func`` differentiates
flat tuples of Tensors. ``flatten`` splits a value into its floating-point Tensors (the
part with gradients), every other leaf (integer Tensors, None, numbers, strings), and
the structure, and ``unflatten`` puts them back, so a target sees the output exactly as
the model returned it.
"""

import copy
import dataclasses
from collections.abc import Mapping

import torch

__all__ = ["flatten", "unflatten", "entries_like", "tensor_fields"]


def _children(value):
    """``(children, rebuild(children))`` of a container, or None for a leaf."""
    if isinstance(value, torch.Tensor):
        return None
    if isinstance(value, Mapping):  # dict, OrderedDict, HuggingFace ModelOutput
        keys = list(value.keys())

        def rebuild_mapping(children):
            new = copy.copy(value)
            for key, child in zip(keys, children, strict=True):
                new[key] = child
            return new

        return [value[key] for key in keys], rebuild_mapping
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
        return list(value), lambda children: type(value)(*children)
    if isinstance(value, (tuple, list)):  # tuples, lists, torch.return_types
        return list(value), lambda children: type(value)(children)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = [field.name for field in dataclasses.fields(value)]

        def rebuild_dataclass(children):
            new = copy.copy(value)
            for name, child in zip(names, children, strict=True):
                object.__setattr__(new, name, child)
            return new

        return [getattr(value, name) for name in names], rebuild_dataclass
    return None


def flatten(value):
    """``(tensors, others, tree)``: the floating-point Tensors of ``value`` in a fixed
    order (depth first), every other leaf, and the structure for ``unflatten``."""
    tensors, others = [], []
    tree = _walk(value, tensors, others)
    return tuple(tensors), others, tree


def _walk(node, tensors, others):
    """``flatten``'s recursion, at module level: a recursive closure would be a reference
    cycle holding the tensors until Python's cycle collector runs."""
    parts = _children(node)
    if parts is not None:
        children, rebuild = parts
        return rebuild, [_walk(child, tensors, others) for child in children]
    if isinstance(node, torch.Tensor) and node.is_floating_point():
        tensors.append(node)
        return True, len(tensors) - 1
    others.append(node)
    return False, len(others) - 1


def unflatten(tree, tensors, others):
    """The value ``flatten`` took apart, with ``tensors`` and ``others`` in place."""
    kind, rest = tree
    if kind is True:
        return tensors[rest]
    if kind is False:
        return others[rest]
    return kind([unflatten(child, tensors, others) for child in rest])


def entries_like(value, like):
    """The entries of ``value`` where ``like`` has its floating-point Tensors, in
    ``flatten``'s order; None marks a zero entry (a None in ``value``). Returns None
    when ``value`` does not have ``like``'s structure."""
    like_parts = _children(like)
    if like_parts is None:
        if isinstance(like, torch.Tensor) and like.is_floating_point():
            return [value]
        return []
    if value is None:
        return [None] * len(flatten(like)[0])
    parts = _children(value)
    if parts is None or type(value) is not type(like) or len(parts[0]) != len(like_parts[0]):
        return None
    entries = []
    for child, like_child in zip(parts[0], like_parts[0], strict=True):
        found = entries_like(child, like_child)
        if found is None:
            return None
        entries.extend(found)
    return entries


def tensor_fields(value, prefix="out"):
    """``[(path, tensor), ...]`` for the Tensors of ``value``, each path written as
    Python that reads it: ``out.logits``, ``out['out']``, ``out[0]``."""
    if isinstance(value, torch.Tensor):
        return [(prefix, value)]
    if isinstance(value, Mapping):
        items = [
            (
                f"{prefix}[{key!r}]" if not _attribute_access(value, key) else f"{prefix}.{key}",
                child,
            )
            for key, child in value.items()
        ]
    elif isinstance(value, (tuple, list)):
        items = [(f"{prefix}[{i}]", child) for i, child in enumerate(value)]
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = [
            (f"{prefix}.{field.name}", getattr(value, field.name))
            for field in dataclasses.fields(value)
        ]
    else:
        return []
    return [path for name, child in items for path in tensor_fields(child, name)]


def _attribute_access(mapping, key):
    """Whether ``mapping.key`` reads the same entry (ModelOutput, dataclass-like dicts)."""
    return (
        isinstance(key, str) and key.isidentifier() and getattr(mapping, key, None) is mapping[key]
    )
