"""Property-based validation of CAM explainers, for your own test suite.

- ``properties``: one ``check_*`` per property an explainer should have, and
  ``check_all``; each raises an AssertionError that names the property, the worst
  element and by how much it broke.
- ``strategies``: hypothesis strategies for small random models (with the layers worth
  explaining), their inputs, and targets of every form. Needs hypothesis (the ``test``
  extra): ``pip install 'gradcam_func[test]'``.
"""

from . import properties

__all__ = ["properties", "strategies"]


def __getattr__(name):
    """``strategies`` imports hypothesis, so only when asked for."""
    if name == "strategies":
        import importlib

        return importlib.import_module(f"{__name__}.strategies")
    raise AttributeError(f"module 'gradcam_func.testing' has no attribute {name!r}")
