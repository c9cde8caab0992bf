"""mkdocs hook: a warning (an error under --strict) for each public name of the API
without a docstring, so the generated reference cannot silently leave one out."""

import importlib
import inspect
import logging

log = logging.getLogger("mkdocs.plugins.gradcam_func")

PUBLIC_MODULES = [
    "gradcam_func",
    "gradcam_func.targets",
    "gradcam_func.metrics",
    "gradcam_func.methods",
    "gradcam_func.ops",
    "gradcam_func.compat",
    "gradcam_func.viz",
    "gradcam_func.jax",
    "gradcam_func.testing",
    "gradcam_func.testing.properties",
    "gradcam_func.testing.strategies",
    "gradcam_func.testing.families",
]


def undocumented():
    """``module.name`` of each public function, class or public method without a docstring."""
    missing = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        if not inspect.getdoc(module):
            missing.append(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.ismodule(obj) or not (inspect.isclass(obj) or callable(obj)):
                continue
            if not (obj.__doc__ or "").strip():
                missing.append(f"{module_name}.{name}")
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    function = getattr(member, "fget", member)
                    if (
                        not attr.startswith("_")
                        and callable(function)
                        and not (function.__doc__ or "").strip()
                    ):
                        missing.append(f"{module_name}.{name}.{attr}")
    return missing


def on_pre_build(config):
    for name in undocumented():
        log.warning(f"{name} has no docstring: the API reference would show it bare.")
