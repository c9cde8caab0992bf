"""Bad input raises GradCamError naming the argument, what was expected and what was given."""

import re

import pytest
import torch
from torch import nn

import gradcam_func as gf
import gradcam_func.compat
from conftest import assert_close, assert_unchanged, exactly, hooks_of, snapshot
from gradcam_func import GradCamError


@pytest.fixture
def net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 5),
    )


@pytest.fixture
def x():
    return torch.randn(2, 3, 6, 6)


def test_layer_name_not_in_the_model(net, x):
    with pytest.raises(
        GradCamError,
        match=r"grad_cam\(\.\.\., layer='layer9'\): the model "
        r"has no submodule 'layer9'.*'0', '1'.*named_modules",
    ):
        gf.grad_cam(net, "layer9", x, 1)


def test_layer_module_not_in_the_model(net, x):
    with pytest.raises(
        GradCamError,
        match=r"layer=Conv2d\(\.\.\.\)\): this module is not "
        r"a submodule of the model \(Sequential\)",
    ):
        gf.grad_cam(net, nn.Conv2d(3, 4, 3), x, 1)


def test_layer_of_the_wrong_type(net, x):
    with pytest.raises(GradCamError, match=r"layer=\.\.\.\): expected an nn.Module.*got int 3"):
        gf.grad_cam(net, 3, x, 1)


# Every entry point that runs the model names itself in the layer's errors.
ENTRY_POINTS = {
    "grad_cam": lambda model, layer, x, **kw: gf.grad_cam(model, layer, x, 1, **kw),
    "cam": lambda model, layer, x, **kw: gf.cam(model, layer, x, 1, method="scorecam", **kw),
    "layer_vjp": lambda model, layer, x, **kw: gf.layer_vjp(model, layer, x, **kw),
}


class Skips(nn.Module):
    def __init__(self):
        super().__init__()
        self.used, self.unused = nn.Linear(3, 2), nn.Linear(3, 2)

    def forward(self, x):
        return self.used(x.mean((2, 3)))


@pytest.mark.parametrize("call", list(ENTRY_POINTS))
def test_layer_never_called(x, call):
    with pytest.raises(
        GradCamError,
        match=rf"^{call}\(\.\.\., layer='unused'\): the layer was not called during the "
        r"model's forward pass, so it has no activation to explain\. Pick a module that the "
        r"forward actually uses \(see model\.named_modules\(\)\)\.$",
    ):
        ENTRY_POINTS[call](Skips(), "unused", x)
    model = Skips()  # a plain function has no module names: the layer's type stands in
    with pytest.raises(GradCamError, match=rf"^{call}\(\.\.\., layer=Linear\): the layer was not"):
        ENTRY_POINTS[call](lambda x: model.used(x.mean((2, 3))), model.unused, x)


@pytest.mark.parametrize("call", list(ENTRY_POINTS))
def test_layer_called_twice(x, call):
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(self.conv(self.conv(x)).mean((2, 3)))

    with pytest.raises(
        GradCamError,
        match=rf"^{call}\(\.\.\., layer='conv'\): the layer is called more than "
        r"once in one forward pass.*Wrap each use in its own module",
    ):
        ENTRY_POINTS[call](Shared(), "conv", x)


@pytest.mark.parametrize(
    "target, fragment",
    [
        (
            5,
            r"target=5\): index 5 is out of range for axis 1 of the model's output, which "
            r"has shape \(2, 5\)",
        ),
        ((-6,), r"index -6 is out of range"),
        ([1, 7], r"target\[1\]=7\): index 7 is out of range"),
        (
            (1, 2),
            r"has 2 indices, but selecting one score per example of an output of shape "
            r"\(2, 5\) needs exactly 1",
        ),
    ],
)
def test_target_out_of_range_or_of_the_wrong_length(net, x, target, fragment):
    with pytest.raises(GradCamError, match=fragment):
        gf.grad_cam(net, "0", x, target)


@pytest.mark.parametrize(
    "target, message",
    [
        ((True,), "grad_cam(..., target=...): index entries must be ints, got bool True."),
        ((1.5,), "grad_cam(..., target=...): index entries must be ints, got float 1.5."),
        ([0, (1.0,)], "grad_cam(..., target[1]=...): index entries must be ints, got float 1.0."),
    ],
)
def test_index_entries_must_be_ints(net, x, target, message):
    with pytest.raises(GradCamError, match=exactly(message)):
        gf.grad_cam(net, "0", x, target)


@pytest.fixture
def grid_net(net):
    """Scores of shape (B, 4, 6): one per channel and column."""
    return nn.Sequential(net[0], nn.ReLU(), nn.AdaptiveAvgPool2d((1, 6)), nn.Flatten(2))


@pytest.mark.parametrize(
    "target, message",
    [
        (
            (0, 6),
            "guided_backprop(..., target=(0, 6)): index 6 is out of range for axis 2 of the "
            "model's output, which has shape (2, 4, 6).",
        ),
        (
            (4,),
            "guided_backprop(..., target=4): index 4 is out of range for axis 1 of the "
            "model's output, which has shape (2, 4, 6).",
        ),
        (
            (1,),
            "guided_backprop(..., target=(1,)): has 1 indices, but selecting one score per "
            "example of an output of shape (2, 4, 6) needs exactly 2 (one per axis after the "
            "batch). Pass a callable target to combine several scores.",
        ),
    ],
)
def test_index_messages_show_the_index_as_given(grid_net, x, target, message):
    with pytest.raises(GradCamError, match=exactly(message)):
        gf.guided_backprop(grid_net, x, target)


@pytest.mark.parametrize(
    "reduce, shape", [(lambda out: out.sum(0), "(5,)"), (lambda out: out.sum(), "()")]
)
def test_an_output_without_the_batch_in_dim_0_is_refused(net, x, reduce, shape):
    message = (
        f"guided_backprop(..., target=...): the model's output has shape {shape}, whose dim 0 "
        "is not the batch of 2 examples. Give the inputs a batch axis (x[None] for one "
        "example), or pass a callable target that returns one score per example."
    )
    with pytest.raises(GradCamError, match=exactly(message)):
        gf.guided_backprop(lambda x: reduce(net(x)), x, 1)


@pytest.mark.parametrize("target, shown", [(None, "target=None"), ([0, 1], "target=...")])
def test_index_target_on_a_structured_output_shows_the_target(net, x, target, shown):
    with pytest.raises(
        GradCamError,
        match=r"^guided_backprop\(\.\.\., " + re.escape(shown) + r"\): an index target needs",
    ):
        gf.guided_backprop(lambda x: {"logits": net(x)}, x, target)


def test_a_callable_target_that_raises_is_named_with_the_call(net, x):
    def broken(out):
        raise KeyError("scores")

    with pytest.raises(
        GradCamError,
        match=r"^guided_backprop\(\.\.\., target=broken\): the target raised KeyError",
    ):
        gf.guided_backprop(net, x, broken)


@pytest.mark.parametrize("target", [[1, 2, 3], torch.tensor([0, 1, 2])])
def test_per_example_target_length_must_match_the_batch(net, x, target):
    with pytest.raises(
        GradCamError,
        match=r"one entry per example: got 3 entries for a "
        r"batch of 2",
    ):
        gf.grad_cam(net, "0", x, target)


def test_float_tensor_target(net, x):
    with pytest.raises(
        GradCamError,
        match=r"a Tensor target must hold one integer index.*"
        r"dtype torch.float32",
    ):
        gf.grad_cam(net, "0", x, torch.tensor([0.5, 1.0]))


def test_target_of_an_unknown_type(net, x):
    with pytest.raises(
        GradCamError,
        match=r"target=\.\.\.\): expected None, an int.*got "
        r"str 'cat'",
    ):
        gf.grad_cam(net, "0", x, "cat")


def test_target_and_targets_together(net, x):
    with pytest.raises(
        GradCamError,
        match=r"target=\.\.\., targets=\.\.\.\): pass one of "
        r"them",
    ):
        gf.grad_cam(net, "0", x, 1, targets=[1, 2])


def test_targets_not_a_sequence(net, x):
    with pytest.raises(
        GradCamError,
        match=r"targets=\.\.\.\): expected a sequence of "
        r"targets.*got int 3",
    ):
        gf.grad_cam(net, "0", x, targets=3)
    with pytest.raises(GradCamError, match=r"targets=\[\]\): expected at least one"):
        gf.grad_cam(net, "0", x, targets=[])
    # only the string 'all' means every class
    with pytest.raises(GradCamError, match=r"top_k\(k\) or 'all'; got str 'All'\.$"):
        gf.grad_cam(net, "0", x, targets="All")


def test_bad_target_inside_targets_names_its_position(net, x):
    with pytest.raises(
        GradCamError, match=r"^grad_cam\(\.\.\., targets\[1\]=9\): index 9 is out of"
    ):
        gf.grad_cam(net, "0", x, targets=[0, 9])
    # guided backprop reaches the K targets' cotangents without grad_cam's checks first
    with pytest.raises(
        GradCamError, match=r"^guided_backprop\(\.\.\., targets\[1\]=9\): index 9 is out of"
    ):
        gf.guided_backprop(net, x, targets=[0, 9])


def test_targets_all_needs_class_scores_from_each_entry_point(x):
    """targets='all' on an output that is not (B, N) is refused by the call that got it."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())  # (B, 4, 6, 6) output
    for call, explain in [
        ("grad_cam", lambda: gf.grad_cam(net, "0", x, targets="all")),
        ("guided_backprop", lambda: gf.guided_backprop(net, x, targets="all")),
    ]:
        with pytest.raises(
            GradCamError,
            match=rf"^{call}\(\.\.\., targets='all'\): needs class scores \(B, N\), got an "
            r"output of shape \(2, 4, 6, 6\)\.",
        ):
            explain()


def test_target_none_needs_one_score_per_example(net, x):
    with pytest.raises(
        GradCamError,
        match=r"^grad_cam\(\.\.\., target=None\): without a target the model must "
        r"return one score per example, but its output has shape \(2, 5\)\. Pass "
        r"target=class_index \(or a callable that returns a \(B,\) score\)\.$",
    ):
        gf.grad_cam(net, "0", x)


def test_callable_target_of_the_wrong_shape(net, x):
    def everything(out):
        return out

    with pytest.raises(
        GradCamError,
        match=r"target=everything\): a callable target must "
        r"map the output to one floating-point score per example, shape "
        r"\(2,\); it returned shape \(2, 5\) and dtype torch.float32",
    ):
        gf.grad_cam(net, "0", x, everything)


@pytest.mark.parametrize(
    "inputs, fragment",
    [
        ([[1.0, 2.0]], r"inputs=\.\.\.\): expected a Tensor .*got list"),
        ((torch.randn(2, 3, 6, 6), "b"), r"inputs\[1\]=\.\.\.\): expected a Tensor.*got str"),
        (torch.tensor(1.0), r"expected a batch with dim 0 as the batch axis, got a 0-d Tensor"),
        (
            (torch.randn(2, 3, 6, 6), torch.randn(3, 1)),
            r"same batch size in dim 0, got shapes \(2, 3, 6, 6\), \(3, 1\)",
        ),
    ],
)
def test_inputs_must_be_batched_tensors(net, inputs, fragment):
    with pytest.raises(GradCamError, match=fragment):
        gf.grad_cam(net, "0", inputs, 1)


def test_params_need_a_module(net, x):
    with pytest.raises(
        GradCamError,
        match=r"params=\.\.\.\): params replace an nn.Module's "
        r"parameters.*the model is a function",
    ):
        gf.grad_cam(lambda x: net(x), net[0], x, 1, params={})


def test_index_target_on_a_structured_output_shows_the_callable(net, x):
    with pytest.raises(
        GradCamError,
        match=r"^grad_cam\(\.\.\., target=1\): an index target needs a model that "
        r"returns a Tensor of scores, but this model returns dict, whose "
        r"Tensors are: out\['logits'\] \(2, 5\) torch.float32\. Pass a "
        r"callable target.*target=lambda out: out\['logits'\]\[:, k\], or wrap the model to "
        r"return the Tensor to explain\.$",
    ):
        gf.grad_cam(lambda x: {"logits": net(x)}, net[0], x, 1)


def test_targets_all_on_a_structured_output_shows_the_callables(net, x):
    with pytest.raises(
        GradCamError,
        match=r"^grad_cam\(\.\.\., targets='all'\): an index target needs a model that returns a "
        r"Tensor of scores, but this model returns dict, .* e\.g\. targets=\[lambda out, k=k: "
        r"out\['logits'\]\[:, k\] for k in range\(n\)\], or wrap",
    ):
        gf.grad_cam(lambda x: {"logits": net(x)}, net[0], x, targets="all")


def test_layer_vjp_names_itself(net, x):
    with pytest.raises(GradCamError, match=r"^layer_vjp\(\.\.\., layer='nope'\)"):
        gf.layer_vjp(net, "nope", x)


def test_errors_are_value_and_type_errors(net, x):
    with pytest.raises(ValueError):
        gf.grad_cam(net, "0", x, 9)
    with pytest.raises(TypeError):
        gf.grad_cam(net, "0", "not a tensor", 1)


# Each refusal below also leaves the model as it found it: state, hooks and inputs.


@pytest.fixture
def bn_net():
    """A train-mode model with BatchNorm, so a forward that ran would leave a trace."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 5),
    ).train()


def raises_untouched(model, inputs, fragment, call):
    """``call()`` raises a GradCamError matching ``fragment``; nothing is left changed."""
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    saved, hooks = snapshot(model, inputs), hooks_of(model)
    with pytest.raises(GradCamError, match=fragment) as info:
        call()
    assert_unchanged(model, inputs, saved)
    assert hooks_of(model) == hooks
    return info.value


def test_integer_images_are_told_to_become_floats(bn_net, x):
    images = (x.abs() * 60).to(torch.uint8)
    error = raises_untouched(
        bn_net,
        images,
        r"grad_cam\(model, \.\.\.\): the model raised "
        r"RuntimeError while running on inputs \(\(2, 3, 6, 6\) "
        r"torch.uint8\).*inputs\[0\] holds torch.uint8 values.*"
        r"x.float\(\) / 255",
        lambda: gf.grad_cam(bn_net, "0", images, 1),
    )
    assert isinstance(error.__cause__, RuntimeError)


def test_an_error_from_a_torch_submodule_is_named_like_a_builtin_one(x):
    """torch.linalg's errors are defined in torch._C, not in builtins or torch itself."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)

    def model(x):
        a = conv(x).flatten(1)[:, :4]
        return torch.linalg.cholesky(-torch.eye(4) * a.pow(2).sum()).flatten(1)

    with pytest.raises(
        GradCamError,
        match=r"^grad_cam\(model, \.\.\.\): the model raised _?LinAlgError while running "
        r"on inputs \(\(2, 3, 6, 6\) torch.float32\)",
    ) as info:
        gf.grad_cam(model, conv, x, 1)
    assert type(info.value.__cause__).__module__ == "torch._C"


def test_integer_token_ids_stay_valid_input():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 3))
    ids = torch.randint(0, 10, (2, 3))
    assert gf.grad_cam(model, "0", ids, 1).shape == (2, 1, 4)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_inputs_in_another_dtype_than_the_weights(bn_net, x, dtype):
    raises_untouched(
        bn_net,
        x.to(dtype),
        rf"inputs\[0\] is {dtype} but the model's weights "
        rf"are torch.float32: pass x.to\(torch.float32\), or convert the model "
        rf"with model.to\({dtype}\)",
        lambda: gf.grad_cam(bn_net, "0", x.to(dtype), 1),
    )


def test_an_input_without_a_batch_axis(bn_net, x):
    raises_untouched(
        bn_net,
        x[0],
        r"inputs\[0\] has shape \(3, 6, 6\), which the model's "
        r"first Conv2d reads as one example without a batch axis: for one "
        r"example, pass x\[None\]",
        lambda: gf.grad_cam(bn_net.eval(), "0", x[0], 1),
    )


@pytest.mark.parametrize(
    "target, fragment",
    [
        (lambda out: 1.0, r"it returned float 1.0"),
        (
            lambda out: out.argmax(1),
            r"it returned shape \(2,\) and dtype torch.int64.*not "
            r"out.argmax\(1\), which has no gradient",
        ),
        (lambda out: out, r"it returned shape \(2, 5\) and dtype torch.float32"),
        (
            lambda out: out.logits[:, 0],
            r"the target raised AttributeError: 'Tensor' object has "
            r"no attribute 'logits'.*a Tensor",
        ),
    ],
)
def test_callable_targets_that_give_no_score_per_example(bn_net, x, target, fragment):
    raises_untouched(
        bn_net,
        x,
        r"target=<lambda>\): " + ".*" + fragment,
        lambda: gf.grad_cam(bn_net, "0", x, target),
    )


@pytest.mark.parametrize(
    "params, fragment",
    [
        (
            {"0.weigth": torch.zeros(4, 3, 3, 3)},
            r"params=\{'0.weigth': \.\.\.\}\): the model has "
            r"no parameter or buffer '0.weigth'; did you mean "
            r"'0.weight'",
        ),
        (
            {"0.weight": torch.zeros(3)},
            r"params=\{'0.weight': \.\.\.\}\): expected a Tensor of "
            r"shape \(4, 3, 3, 3\).*got a Tensor of shape \(3,\)",
        ),
        (
            [("0.weight", torch.zeros(4, 3, 3, 3))],
            r"params=\.\.\.\): expected a mapping of names "
            r"to Tensors.*got list",
        ),
    ],
)
def test_params_that_do_not_fit_the_model(bn_net, x, params, fragment):
    raises_untouched(bn_net, x, fragment, lambda: gf.grad_cam(bn_net, "0", x, 1, params=params))


@pytest.mark.parametrize(
    "cotangent, fragment",
    [
        (torch.zeros(2, 4), r"shape \(2, 5\) and dtype torch.float32; got shape \(2, 4\)"),
        (torch.zeros(2, 5, dtype=torch.float64), r"got shape \(2, 5\) and dtype torch.float64"),
        ([1.0], r"got list"),
    ],
)
def test_pullback_cotangent_of_the_wrong_shape_or_dtype(net, x, cotangent, fragment):
    _, _, pullback = gf.layer_vjp(net, "0", x)
    with pytest.raises(
        GradCamError,
        match=r"layer_vjp\(\.\.\.\) pullback\(cotangent\): the "
        r"cotangent must be a Tensor shaped like the output, .*" + fragment,
    ):
        pullback(cotangent)


def test_torchscript_is_refused_with_why(net, x):
    scripted = torch.jit.script(net)
    raises_untouched(
        net,
        x,
        r"grad_cam\(model=RecursiveScriptModule\(\.\.\.\)\): a "
        r"torch.jit.script \(or trace\) module runs its forward as TorchScript.*"
        r"Explain the original nn.Module",
        lambda: gf.grad_cam(scripted, "0", x, 1),
    )


def test_data_parallel_explains_its_module(net, x):
    expected = gf.grad_cam(net, "0", x, 1)
    parallel = nn.DataParallel(net)
    for layer in ("module.0", "0", net[0]):
        assert_close(gf.grad_cam(parallel, layer, x, 1), expected)


def test_distributed_data_parallel_explains_its_module(net, x):
    import socket

    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        wrapped = nn.parallel.DistributedDataParallel(net)
        assert_close(gf.grad_cam(wrapped, "module.0", x, 1), gf.grad_cam(net, "0", x, 1))
    finally:
        dist.destroy_process_group()


def test_a_compiled_model_takes_its_original_layer_names(net, x):
    compiled = torch.compile(net)
    expected = gf.grad_cam(net, "0", x, targets=[1, 2])
    for layer in ("0", "_orig_mod.0", net[0]):
        assert_close(gf.grad_cam(compiled, layer, x, targets=[1, 2]), expected)


class Checkpointed(nn.Module):
    """Activation checkpointing as torch.utils.checkpoint does it, which torch.func
    cannot differentiate through, and behind a switch like HuggingFace's and timm's."""

    def __init__(self, reentrant):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
        self.reentrant = reentrant
        self.grad_checkpointing = False  # timm's switch

    def forward(self, x):
        if self.grad_checkpointing:
            from torch.utils.checkpoint import checkpoint

            return checkpoint(self.head, self.conv(x), use_reentrant=self.reentrant)
        return self.head(self.conv(x))


@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpointing_behind_a_known_switch_is_turned_off_for_the_call(x, reentrant):
    torch.manual_seed(0)
    model = Checkpointed(reentrant)
    expected = gf.grad_cam(model, "conv", x, 1)
    model.grad_checkpointing = True
    assert_close(gf.grad_cam(model, "conv", x, 1), expected)
    assert model.grad_checkpointing is True


@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpointing_gradcam_func_cannot_switch_off_names_the_fix(x, reentrant):
    torch.manual_seed(0)
    model = Checkpointed(reentrant)

    def checkpointed(inputs):  # checkpointing hard-wired into a plain function
        from torch.utils.checkpoint import checkpoint

        return checkpoint(model.head, model.conv(inputs), use_reentrant=reentrant)

    with pytest.raises(
        GradCamError,
        match=r"activation checkpointing "
        r"\(torch.utils.checkpoint\).*turn it off for the call",
    ):
        gf.grad_cam(checkpointed, model.conv, x, 1)


def test_huggingface_gradient_checkpointing_in_train_mode():
    from hf_models import build

    model, x = build("vit")
    model.train()
    expected = gf.grad_cam(model, "vit.layers.0.mlp.fc1", x, lambda out: out.logits[:, 1])
    # transformers 5 renamed the switch (the old names warn); older versions have only
    # the old names
    enable = (
        getattr(model, "activation_checkpointing_enable", None)
        or model.gradient_checkpointing_enable
    )
    enable()

    def checkpointing():
        return (
            getattr(model, "is_activation_checkpointing", None)
            if hasattr(model, "activation_checkpointing_enable")
            else model.is_gradient_checkpointing
        )

    assert checkpointing()
    assert_close(
        gf.grad_cam(model, "vit.layers.0.mlp.fc1", x, lambda out: out.logits[:, 1]), expected
    )
    assert checkpointing()


@pytest.mark.parametrize("call", ["grad_cam", "layer_vjp"])
def test_an_output_without_floating_point_tensors_is_refused(x, call):
    class Votes(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x).mean((2, 3)).argmax(1)

    with pytest.raises(
        GradCamError,
        match=rf"^{call}\(model, \.\.\.\): the model's output \(Tensor\) holds no "
        r"floating-point Tensor, so there is no score to differentiate\.$",
    ):
        ENTRY_POINTS[call](Votes(), "conv", x)


class Fails(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        self.conv(x)
        raise RuntimeError("boom in the head")


@pytest.mark.parametrize("call", list(ENTRY_POINTS))
def test_every_entry_point_names_itself_in_the_input_checks(x, call):
    model = Skips()
    with pytest.raises(
        GradCamError, match=rf"^{call}\(model=\.\.\.\): expected an nn\.Module or a"
    ):
        ENTRY_POINTS[call]("not a model", "used", x)
    with pytest.raises(GradCamError, match=rf"^{call}\(\.\.\., inputs=\.\.\.\): expected a Tensor"):
        ENTRY_POINTS[call](model, "used", [1.0, 2.0])
    with pytest.raises(GradCamError, match=rf"^{call}\(\.\.\., layer='nope'\)"):
        ENTRY_POINTS[call](model, "nope", x)
    with pytest.raises(
        GradCamError,
        match=rf"^{call}\(\.\.\., params=\{{'used.weigth': \.\.\.\}}\): the model has no "
        r"parameter or buffer 'used.weigth'; did you mean 'used.weight'",
    ):
        ENTRY_POINTS[call](model, "used", x, params={"used.weigth": torch.zeros(2, 3)})
    with pytest.raises(GradCamError, match=rf"^{call}\(.*boom in the head"):
        ENTRY_POINTS[call](Fails(), "conv", x)


# Each flag of each public function, called as a user would: (call as it names itself,
# the flag, a function of (model, x, tmp_path, flag value)).
FLAGS = [
    ("grad_cam", "relu", lambda m, x, tmp, v: gf.grad_cam(m, "0", x, 1, relu=v)),
    ("grad_cam", "sum_channels", lambda m, x, tmp, v: gf.grad_cam(m, "0", x, 1, sum_channels=v)),
    (
        "grad_cam",
        "attribute_to_layer_input",
        lambda m, x, tmp, v: gf.grad_cam(m, "0", x, 1, attribute_to_layer_input=v),
    ),
    ("cam", "relu", lambda m, x, tmp, v: gf.cam(m, "0", x, 1, method="layercam", relu=v)),
    ("cam", "sum_channels", lambda m, x, tmp, v: gf.cam(m, "0", x, 1, sum_channels=v)),
    (
        "cam",
        "attribute_to_layer_input",
        lambda m, x, tmp, v: gf.cam(m, "0", x, 1, method="scorecam", attribute_to_layer_input=v),
    ),
    (
        "layer_vjp",
        "attribute_to_layer_input",
        lambda m, x, tmp, v: gf.layer_vjp(m, "0", x, attribute_to_layer_input=v),
    ),
    (
        "guided_grad_cam",
        "attribute_to_layer_input",
        lambda m, x, tmp, v: gf.guided_grad_cam(m, "0", x, 1, attribute_to_layer_input=v),
    ),
    ("compile_grad_cam", "relu", lambda m, x, tmp, v: gf.compile_grad_cam(m, "0", relu=v)),
    (
        "compile_grad_cam",
        "sum_channels",
        lambda m, x, tmp, v: gf.compile_grad_cam(m, "0", sum_channels=v),
    ),
    *[
        (
            "LayerGradCam.attribute",
            flag,
            lambda m, x, tmp, v, flag=flag: gf.compat.LayerGradCam(m, m[0]).attribute(
                x, 1, **{flag: v}
            ),
        )
        for flag in ("attribute_to_layer_input", "relu_attributions", "attr_dim_summation")
    ],
    *[
        (
            "explain_dataset",
            flag,
            lambda m, x, tmp, v, flag=flag: gf.explain_dataset(
                m, "0", list(x), targets=[1], out=tmp, **{flag: v}
            ),
        )
        for flag in ("relu", "progress")
    ],
    *[
        (
            call,
            flag,
            lambda m, x, tmp, v, fn=fn, flag=flag: fn(m, "0", x, 1, **{flag: v}),
        )
        for call, fn in (("smooth_cam", gf.smooth_cam), ("augmented_cam", gf.augmented_cam))
        for flag in ("attribute_to_layer_input", "relu", "sum_channels")
    ],
    ("load_cams", "with_classes", lambda m, x, tmp, v: gf.load_cams(tmp, with_classes=v)),
    (
        "detection",
        "box_terms",
        lambda m, x, tmp, v: gf.targets.detection([0, 0, 1, 1], 1, box_terms=v),
    ),
    ("overlay", "normalize", lambda m, x, tmp, v: gf.viz.overlay(x[0, 0], x[0], normalize=v)),
]


@pytest.mark.parametrize(
    "value, shown", [(None, "NoneType None"), (0, "int 0"), ("yes", "str 'yes'")]
)
@pytest.mark.parametrize("call, flag, run", FLAGS, ids=[f"{c}-{f}" for c, f, _ in FLAGS])
def test_flags_take_true_or_false_only(net, x, tmp_path, call, flag, run, value, shown):
    """None, 0 or "yes" for a flag is refused, not read by its truth; nothing is touched."""
    saved, hooks = snapshot(net, (x,)), hooks_of(net)
    with pytest.raises(
        GradCamError,
        match=exactly(
            f"{call}(..., {flag}=...): expected True or False, got {shown}. Pass a bool."
        ),
    ):
        run(net, x, tmp_path, value)
    assert_unchanged(net, (x,), saved)
    assert hooks_of(net) == hooks
    assert list(tmp_path.iterdir()) == []  # explain_dataset wrote nothing


class Argsort(nn.Module):
    def forward(self, h):
        return h.argsort(-1)


class Ranks(nn.Module):
    """Integer ids in, an embedding, then ``rank``: a layer that returns integers."""

    def __init__(self):
        super().__init__()
        self.embed, self.rank, self.fc = nn.Embedding(6, 4), Argsort(), nn.Linear(8, 2)

    def forward(self, ids):
        h = self.embed(ids)
        return self.fc((h * self.rank(h)).flatten(1))


@pytest.mark.parametrize(
    "layer, at_input, where",
    [("embed", True, "input"), ("rank", False, "output")],
)
def test_a_layer_without_floats_where_it_is_explained_is_refused(layer, at_input, where):
    torch.manual_seed(0)
    model, ids = Ranks(), torch.randint(0, 6, (3, 2))
    raises_untouched(
        model,
        ids,
        exactly(
            f"grad_cam(..., layer='{layer}'): the layer's {where} holds no floating-point "
            f"Tensor, so there is nothing to attribute to. Pick a layer whose {where} is a "
            "float Tensor (or a tuple holding some)."
        ),
        lambda: gf.grad_cam(model, layer, ids, 1, attribute_to_layer_input=at_input),
    )


def test_a_layer_input_from_nowhere_the_split_can_see_is_refused():
    """A tensor kept as a plain attribute (not a parameter, a buffer or an input) is
    made by no call inside the forward: its other uses cannot be perturbed."""

    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer, self.fc, self.offset = nn.Linear(3, 3), nn.Linear(3, 2), torch.ones(2, 3)

        def forward(self, x):
            return self.fc(self.layer(self.offset) + x)

    torch.manual_seed(0)
    model, x = Constant(), torch.randn(2, 3)
    raises_untouched(
        model,
        x,
        exactly(
            "grad_cam(..., layer='layer', attribute_to_layer_input=True): a tensor the layer "
            "receives was not made by a torch call, a model input or a parameter that "
            "gradcam_func can see (a custom C++ op?), so its gradient through every use "
            "cannot be taken. Explain the output of the layer that makes it instead."
        ),
        lambda: gf.grad_cam(model, "layer", x, 1, attribute_to_layer_input=True),
    )
