"""Every public function and class of the API carries type hints (mypy checks them in
CI; this test checks that none is missing, which mypy does not) and a docstring (the
generated API reference shows it; docs/hooks.py fails `make docs` without one)."""

import importlib
import importlib.util
import inspect
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
hooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hooks)
PUBLIC_MODULES = hooks.PUBLIC_MODULES  # the modules the API reference documents


def unannotated(function):
    """Names of the parameters (and "return") of ``function`` without an annotation."""
    signature = inspect.signature(function)
    missing = [
        name
        for name, p in signature.parameters.items()
        if p.annotation is inspect.Parameter.empty and name not in ("self", "cls")
    ]
    if signature.return_annotation is inspect.Signature.empty:
        missing.append("return")
    return missing


def public_callables():
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.ismodule(obj):
                continue
            if inspect.isclass(obj):
                if issubclass(obj, Exception | Warning):
                    continue
                methods = [("__init__", obj.__init__)] + [
                    (n, m)
                    for n, m in vars(obj).items()
                    if inspect.isfunction(m) and not n.startswith("_")
                ]
                for method_name, method in methods:
                    if method is object.__init__:
                        continue
                    yield f"{module_name}.{name}.{method_name}", method
            elif callable(obj):
                yield f"{module_name}.{name}", obj


def test_every_public_callable_is_annotated():
    missing = {name: m for name, f in public_callables() if (m := unannotated(f))}
    assert not missing, f"public callables without type hints: {missing}"


def test_every_public_name_has_a_docstring():
    assert hooks.undocumented() == []


def test_the_check_sees_a_missing_hint():
    def half(x: int, y) -> int:
        return x

    assert unannotated(half) == ["y"]
    assert len(list(public_callables())) > 80


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_public_modules_declare_all(module_name):
    assert importlib.import_module(module_name).__all__
