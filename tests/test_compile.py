"""compile_grad_cam: one torch.compile graph (no breaks), grad_cam's values, Captum's."""

import pytest
import torch
from captum.attr import LayerGradCam
from torch import nn

import gradcam_func as gf
import gradcam_func._split
from conftest import (
    FULLGRAPH,
    MUTMUT_STATS,
    assert_close,
    assert_matches,
    hooks_of,
    snapshot,
    assert_unchanged,
)
from zoo import PlainCNN, Residual


def assert_one_graph(backend):
    """One graph captured; not counted in mutmut's stats run, which runs uncompiled."""
    if not MUTMUT_STATS:
        assert backend.graphs == 1


class Counted:
    """A torch.compile backend that runs the captured graph as is and counts graphs."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, graph, example_inputs):
        self.graphs += 1
        return graph.forward


def residual(seed=0):
    torch.manual_seed(seed)
    model = Residual().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    return model


def captum_loop(model, layer, x, classes, **options):
    explainer = LayerGradCam(model, layer)
    return torch.stack([explainer.attribute(x, c, **options).detach() for c in classes])


@pytest.mark.parametrize("layer", ["conv", "bn", "stem"])
def test_one_graph_with_captums_values_for_every_target(layer):
    """fullgraph=True fails on any graph break; the layer's output feeds an in-place
    ReLU at "bn" (what is kept must be the value before it)."""
    model, x = residual(), torch.randn(3, 3, 6, 6)
    backend = Counted()
    explain = gf.compile_grad_cam(model, layer, backend=backend, fullgraph=FULLGRAPH)
    expected = captum_loop(model, getattr(model, layer), x, [0, 2, 3])
    assert_matches(explain(x, targets=[0, 2, 3]), expected)
    assert_one_graph(backend)


def test_new_class_values_reuse_the_graph_and_every_form_matches_grad_cam():
    model, x = residual(), torch.randn(4, 3, 6, 6)
    backend = Counted()
    explain = gf.compile_grad_cam(model, "conv", backend=backend, fullgraph=FULLGRAPH)
    explain(x, targets=[0, 1])
    explain(x, targets=[3, 2])
    assert_one_graph(backend)  # the indices are a tensor input of the graph
    per_example = torch.tensor([3, 0, 1, 2])
    for kwargs in (
        dict(targets=[3, 2]),
        dict(targets=[per_example, 1]),
        dict(targets=range(4)),
        dict(targets="all"),
        dict(target=2),
        dict(target=per_example),
    ):
        expected = gf.grad_cam(model, "conv", x, **kwargs)
        assert_matches(explain(x, **kwargs), expected)
    int32 = torch.tensor([2, 0], dtype=torch.int32)
    assert_matches(explain(x, targets=int32), gf.grad_cam(model, "conv", x, targets=[2, 0]))
    three = torch.randn(3, 3, 6, 6)  # "all" with B != N
    assert_matches(explain(three, targets="all"), gf.grad_cam(model, "conv", three, targets="all"))
    stacked = torch.tensor([[0, 1, 2, 3], [1, 1, 1, 1]])  # (K, B), a form of its own
    expected = gf.grad_cam(model, "conv", x, targets=list(stacked))
    assert_matches(explain(x, targets=stacked), expected)


def test_relu_sum_channels_and_chunks_against_captum():
    model, x = residual(1), torch.randn(2, 3, 6, 6)
    layer = model.conv
    for chunk_size in (None, 1, "auto"):
        explain = gf.compile_grad_cam(
            model, layer, relu=True, sum_channels=False, chunk_size=chunk_size, backend="eager"
        )
        expected = captum_loop(
            model, layer, x, [0, 1, 3], relu_attributions=True, attr_dim_summation=False
        )
        assert expected.shape == (3, 2, 8, 6, 6)
        assert_matches(explain(x, targets=[0, 1, 3]), expected)


class Shifted(nn.Module):
    """Residual's logits times an extra argument ``scale``, plus a second input (B, 4)."""

    def __init__(self):
        super().__init__()
        self.net = residual()

    def forward(self, x, shift, scale):
        return self.net(x) * scale + shift


def test_tuple_inputs_and_extra_arguments_against_captum():
    model, x, shift = Shifted().eval(), torch.randn(3, 3, 6, 6), torch.randn(3, 4)
    scale = torch.tensor(-1.5)
    backend = Counted()
    explain = gf.compile_grad_cam(model, "net.conv", backend=backend, fullgraph=FULLGRAPH)
    expected = captum_loop(
        model, model.net.conv, (x, shift), [0, 3], additional_forward_args=(scale,)
    )
    got = explain((x, shift), targets=[0, 3], additional_forward_args=(scale,))
    assert_matches(got, expected)
    assert_one_graph(backend)


def test_inductor_compiles_it_and_matches_captum():
    model, x = residual(2), torch.randn(2, 3, 6, 6)
    explain = gf.compile_grad_cam(model, "conv", fullgraph=FULLGRAPH)
    expected = captum_loop(model, model.conv, x, [1, 3])
    assert_matches(explain(x, targets=[1, 3]), expected)
    assert_matches(explain(x, targets=[3, 0]), captum_loop(model, model.conv, x, [3, 0]))


def test_train_mode_batchnorm_updates_statistics_once_like_a_forward():
    model, x = residual(3).train(), torch.randn(4, 3, 6, 6)
    twin = residual(3).train()
    expected = gf.grad_cam(twin, "conv", x, targets=[0, 1, 2])
    explain = gf.compile_grad_cam(model, "conv", backend="eager", fullgraph=FULLGRAPH)
    assert_matches(explain(x, targets=[0, 1, 2]), expected)
    reference = residual(3).train()
    with torch.no_grad():
        reference(x)
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, dict(reference.named_buffers())[name]), name
    assert not torch.equal(model.bn.running_mean, residual(3).bn.running_mean)


def test_the_module_hooks_and_inputs_are_left_as_they_were_also_after_an_error():
    model, x = residual(), torch.randn(2, 3, 6, 6)
    model.conv.register_forward_hook(lambda *args: None)
    before_hooks, saved = hooks_of(model), snapshot(model, (x,))
    explain = gf.compile_grad_cam(model, "conv", backend="eager")
    explain(x, targets=[0, 1])
    with pytest.raises(
        gf.GradCamError,
        match=r"^compile_grad_cam\(\.\.\.\)\(inputs, targets=\.\.\.\): class index 4 is out of "
        r"range for the model's 4 classes\.$",
    ):
        explain(x, targets=[1, 4])
    with pytest.raises(
        gf.GradCamError,
        match=r"^compile_grad_cam\(\.\.\.\)\(inputs, target=\.\.\.\): class index 5",
    ):
        explain(x, target=5)
    assert hooks_of(model) == before_hooks
    assert_unchanged(model, (x,), saved)


class DictOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = PlainCNN()

    def forward(self, x):
        return {"logits": self.net(x)}


class Unused(PlainCNN):
    """PlainCNN with a convolution its forward never runs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)


class WithIdentity(PlainCNN):
    """PlainCNN with an identity layer (returns the Tensor it receives) after conv2."""

    def __init__(self):
        super().__init__()
        self.same = nn.Identity()

    def forward(self, x):
        x = self.same(self.relu2(self.conv2(self.relu1(self.conv1(x)))))
        return self.fc(self.pool(x).flatten(1))


class ThreeDimensional(PlainCNN):
    def forward(self, x):
        return super().forward(x)[..., None]


@pytest.mark.parametrize(
    ("make", "layer", "kwargs", "message"),
    [
        (
            residual,
            "conv",
            {},
            r"expected target=class .* \(K of those, or 'all'\); got neither\. For a score "
            r"without a class index, use grad_cam with a callable target\.",
        ),
        (residual, "conv", dict(targets="every"), r"targets=\.\.\.\): .* got 'every'"),
        (residual, "conv", dict(target=1.5), r"\(inputs, target=\.\.\.\): expected class"),
        (
            residual,
            "conv",
            dict(targets=[1.5]),
            r"^compile_grad_cam\(\.\.\.\)\(inputs, targets=\.\.\.\): expected class indices: an "
            r"int or 2 ints \(one per example\) per target, a sequence of those, an integer "
            r"Tensor \(K,\) or \(K, 2\), or 'all'; got \[1\.5\] \(not integer class indices\)\. "
            r"For callables, tuples or top_k, use grad_cam\.$",
        ),
        (residual, "conv", dict(targets=[torch.tensor([1, 2, 3])]), r"3 indices for 2 examples"),
        (residual, "conv", dict(targets=[-1]), r"must be >= 0; got -1"),
        (residual, "conv", dict(targets=[]), r"expected at least one target"),
        (residual, "conv", dict(target=1, targets=[1]), r"pass one of them"),
        (
            DictOutput,
            "net.conv2",
            dict(targets=[1]),
            r"^compile_grad_cam: the model's output must be a Tensor of class scores \(B, N\) "
            r"for class-index targets; got a dict\. For other outputs and targets \(a callable "
            r"score, a HuggingFace output\) use grad_cam, or wrap the model so it returns the "
            r"scores\.$",
        ),
        (
            ThreeDimensional,
            "conv2",
            dict(targets=[1]),
            r"Tensor of class scores \(B, N\) .*got a Tensor of shape \(2, 5, 1\)\.",
        ),
        (
            residual,
            "conv",
            dict(targets=torch.tensor([1.5, 2.0])),
            r"got a Tensor of shape \(2,\) and dtype torch.float32 \(not integer class indices\)",
        ),
        (
            residual,
            "conv",
            dict(targets=[torch.tensor([True, False])]),
            r"\(not integer class indices\)",
        ),
        (
            residual,
            "conv",
            dict(targets=[torch.tensor([[0, 1], [1, 0]])]),
            r"\(not integer class indices\)",
        ),
        (Unused, "conv", dict(targets=[0]), r"^compile_grad_cam\(.*'conv'.* not called"),
        (
            WithIdentity,
            "same",
            dict(targets=[0]),
            r"must return one Tensor that it makes itself; it returns 1 floating Tensor\(s\), "
            r"or returns the one it received\. Pick the layer that makes the activation, or "
            r"use grad_cam\.",
        ),
        (residual, "conv", dict(targets=["x" * 200]), r"got \['x{78} \(new"),
    ],
)
def test_bad_arguments_name_what_was_expected(make, layer, kwargs, message):
    explain = gf.compile_grad_cam(make(), layer, backend="eager")
    with pytest.raises(gf.GradCamError, match=message):
        explain(torch.randn(2, 3, 6, 6), **kwargs)


def test_the_model_and_layer_are_checked_when_the_explainer_is_made():
    with pytest.raises(
        gf.GradCamError,
        match=r"^compile_grad_cam\(model=\.\.\.\): expected an nn\.Module or a callable",
    ):
        gf.compile_grad_cam("not a model", "conv")
    with pytest.raises(
        gf.GradCamError,
        match=r"^compile_grad_cam\(model=\.\.\.\): expected an nn\.Module \(its parameters go into "
        r"the compiled graph\); got a function\. Use grad_cam for a plain callable\.$",
    ):
        gf.compile_grad_cam(lambda x: x, "conv")
    with pytest.raises(gf.GradCamError, match=r"^compile_grad_cam\(\.\.\., layer='conv9'\)"):
        gf.compile_grad_cam(residual(), "conv9")
    with pytest.raises(gf.GradCamError, match=r"^compile_grad_cam\(\.\.\., chunk_size=0\)"):
        gf.compile_grad_cam(residual(), "conv", chunk_size=0)


def test_the_explainers_checks_of_its_arguments_name_it():
    explain = gf.compile_grad_cam(residual(), "conv", backend="eager")
    with pytest.raises(
        gf.GradCamError,
        match=r"^compile_grad_cam\(\.\.\., target=\.\.\., targets=\.\.\.\): pass one",
    ):
        explain(torch.randn(2, 3, 6, 6), target=1, targets=[1])
    with pytest.raises(
        gf.GradCamError, match=r"^compile_grad_cam\(\.\.\., inputs=\.\.\.\): expected a Tensor"
    ):
        explain([1.0, 2.0], 1)


def test_a_layer_called_twice_is_refused():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(self.conv(self.conv(x)).mean((2, 3)))

    explain = gf.compile_grad_cam(Twice(), "conv", backend="eager")
    with pytest.raises(
        gf.GradCamError, match="called 2 times in one forward .* Pick a layer that runs once."
    ):
        explain(torch.randn(2, 3, 6, 6), targets=[0])


def test_eager_and_compiled_agree_at_float64():
    model = PlainCNN().double().eval()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    explain = gf.compile_grad_cam(model, model.conv2, backend="eager", fullgraph=FULLGRAPH)
    expected = captum_loop(model, model.conv2, x, [0, 4])
    assert_matches(explain(x, targets=[0, 4]), expected)
    assert_close(explain(x, target=4), expected[1])


def test_inside_no_grad_as_explainers_are_usually_called():
    model, x = residual(4), torch.randn(2, 3, 6, 6)
    explain = gf.compile_grad_cam(model, "conv", backend="eager", fullgraph=FULLGRAPH)
    with torch.no_grad():
        cams = explain(x, targets=[0, 3])
    assert not cams.requires_grad
    assert_matches(cams, captum_loop(model, model.conv, x, [0, 3]))


class Crop(nn.Module):
    """PlainCNN on the top-left ``size`` x ``size`` corner: a setting that changes the
    layer's shape while the inputs keep theirs."""

    def __init__(self):
        super().__init__()
        self.net, self.size = PlainCNN(), 6

    def forward(self, x):
        return self.net(x[..., : self.size, : self.size])


def test_a_layer_shape_changed_since_the_cached_probe_is_probed_again():
    torch.manual_seed(0)
    model, x = Crop().eval(), torch.randn(2, 3, 8, 8)
    explain = gf.compile_grad_cam(model, "net.conv2", backend="eager")
    assert explain(x, targets=[0, 1]).shape[-1] == 6
    model.size = 5  # same input signature: the cached shape is stale
    got = explain(x, targets=[0, 1])
    expected = captum_loop(model.net, model.net.conv2, x[..., :5, :5], [0, 1])
    assert_matches(got, expected)


class Shrinking(Crop):
    """Crop that crops one pixel more at each forward."""

    def forward(self, x):
        self.size -= 1
        return super().forward(x)


def test_a_layer_whose_shape_changes_at_every_run_is_refused():
    torch.manual_seed(0)
    model, x = Shrinking().eval(), torch.randn(2, 3, 8, 8)
    explain = gf.compile_grad_cam(model, "net.conv2", backend="eager")
    with pytest.raises(
        gf.GradCamError,
        match=r"^compile_grad_cam\(model, layer\): the layer's output changes shape between two "
        r"runs on the same inputs, so it cannot be compiled as one graph\. Use grad_cam\.$",
    ):
        explain(x, targets=[0, 1])


def test_a_second_call_on_inputs_of_the_same_signature_probes_nothing(monkeypatch):
    """The shape probe's spec is cached: inputs of a shape seen before are not probed."""
    probes, find_spec = [], gradcam_func._split._find_spec

    def counted(*args, **kwargs):
        probes.append(kwargs["meta"] if "meta" in kwargs else args[-1])
        return find_spec(*args, **kwargs)

    monkeypatch.setattr(gradcam_func._split, "_find_spec", counted)
    torch.manual_seed(0)
    model = PlainCNN().eval()
    explain = gf.compile_grad_cam(model, "conv2", backend="eager")
    explain(torch.randn(2, 3, 8, 8), targets=[0, 1])
    assert probes == [True]  # one probe, on the meta device
    got = explain(torch.randn(2, 3, 8, 8), targets=[0, 1])
    assert probes == [True] and got.shape == (2, 2, 1, 8, 8)


def test_the_maps_keep_a_low_precision_models_dtype():
    torch.manual_seed(0)
    model, x = PlainCNN().eval().to(torch.bfloat16), torch.randn(2, 3, 8, 8, dtype=torch.bfloat16)
    explain = gf.compile_grad_cam(model, "conv2", backend="eager", fullgraph=FULLGRAPH)
    got = explain(x, targets=[0, 3])
    assert got.dtype == torch.bfloat16
    expected = gf.grad_cam(model, "conv2", x, targets=[0, 3])
    assert_close(got, expected)


def test_chunk_size_reaches_the_vmapped_pullbacks(monkeypatch):
    """chunk_size bounds memory and changes no value: seen where it is passed to vmap."""
    seen, vmap = [], torch.func.vmap

    def spy(fn, *args, chunk_size=None, **kwargs):
        seen.append(chunk_size)
        return vmap(fn, *args, chunk_size=chunk_size, **kwargs)

    monkeypatch.setattr(torch.func, "vmap", spy)
    model, x = residual(), torch.randn(2, 3, 6, 6)
    gf.compile_grad_cam(model, "conv", backend="eager", chunk_size=2)(x, targets=[0, 1, 2])
    assert seen == [2]
