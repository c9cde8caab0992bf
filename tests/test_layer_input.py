"""attribute_to_layer_input: the gradient with respect to the tensor the layer receives,
through every use of that tensor, equal to Captum's autograd on the architectures where
other uses hide (residual shortcuts, sibling branches, ``attn(x, x, x)``, in-place ops)."""

import copy

import pytest
import torch
from captum._utils.gradient import compute_layer_gradients_and_eval
from captum.attr import LayerGradCam
from torch import nn

import gradcam_func as gf
from conftest import FINITE_DIFFERENCES, assert_close, assert_matches, exactly
from gradcam_func.methods import METHODS
from layer_inputs import CASES

OPTIONS = [dict(), dict(relu=True), dict(sum_channels=False)]


def captum(model, layer, x, target, relu=False, sum_channels=True):
    result = LayerGradCam(model, model.get_submodule(layer)).attribute(
        x.clone(),
        target,
        attribute_to_layer_input=True,
        relu_attributions=relu,
        attr_dim_summation=sum_channels,
    )
    return tuple(r.detach() for r in result) if isinstance(result, tuple) else result.detach()


def through_the_layer_only(model, layer, x, target):
    """The CAM if only the layer's own path counted (the semantics Captum does not have):
    the layer's inputs swapped for detached leaves at its pre-hook."""
    leaves = []

    def swap(_, args):
        new = tuple(a.detach().requires_grad_() if torch.is_tensor(a) else a for a in args)
        leaves.extend(a for a in new if torch.is_tensor(a))
        return new

    handle = model.get_submodule(layer).register_forward_pre_hook(swap)
    try:
        score = model(x)[:, target].sum()
    finally:
        handle.remove()
    grads = torch.autograd.grad(score, leaves)
    cams = tuple(gf.ops.grad_cam_from(a.detach(), g) for a, g in zip(leaves, grads, strict=True))
    return cams if len(cams) > 1 else cams[0]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(o) or "default")
@pytest.mark.parametrize("name", CASES)
def test_grad_cam_equals_captum(name, options):
    model, layer, x = CASES[name]()
    assert_matches(
        gf.grad_cam(model, layer, x, 1, attribute_to_layer_input=True, **options),
        captum(model, layer, x, 1, **options),
    )


@pytest.mark.parametrize("name", [name for name in CASES if name != "basic_block"])
def test_each_case_has_uses_outside_the_layer(name):
    """The layer's path alone gives another CAM, so the test above can tell them apart.
    (A whole BasicBlock uses its input only inside: it is there for parity alone.)"""
    model, layer, x = CASES[name]()
    expected = captum(model, layer, x, 1)
    alone = through_the_layer_only(model, layer, x, 1)
    pairs = zip(*(v if isinstance(v, tuple) else (v,) for v in (expected, alone)), strict=True)
    assert any((e - a).abs().max() > 1e-3 * e.abs().max() for e, a in pairs)


@pytest.mark.parametrize("name", CASES)
def test_targets_equal_captums_loop_from_one_forward(name):
    model, layer, x = CASES[name]()
    targets = [0, 3, 1]
    stacked = gf.grad_cam(model, layer, x, targets=targets, attribute_to_layer_input=True)
    expected = [captum(model, layer, x, t) for t in targets]
    if isinstance(expected[0], tuple):
        expected = tuple(torch.stack(parts) for parts in zip(*expected, strict=True))
    else:
        expected = torch.stack(expected)
    assert_matches(stacked, expected)


@pytest.mark.parametrize("method", [m for m, spec in METHODS.items() if spec.kind == "gradient"])
@pytest.mark.parametrize("name", ["basic_block_conv1", "fire_expand3x3", "model_input"])
def test_every_method_sees_the_total_gradient(name, method):
    model, layer, x = CASES[name]()
    grads, acts = compute_layer_gradients_and_eval(
        model, model.get_submodule(layer), x.clone(), 2, attribute_to_layer_input=True
    )
    expected = METHODS[method].compute(acts[0].detach(), grads[0].detach())
    assert_matches(
        gf.cam(model, layer, x, 2, method=method, attribute_to_layer_input=True), expected
    )


@pytest.mark.parametrize("name", CASES)
def test_layer_vjp_pullback_equals_captums_gradient(name):
    model, layer, x = CASES[name]()
    output, acts, pullback = gf.layer_vjp(model, layer, x, attribute_to_layer_input=True)
    cotangent = torch.zeros_like(output)
    cotangent[:, 4] = 1
    grads, evals = compute_layer_gradients_and_eval(
        model, model.get_submodule(layer), x.clone(), 4, attribute_to_layer_input=True
    )
    mine = pullback(cotangent)
    mine, acts = (mine, acts) if isinstance(mine, tuple) else ((mine,), (acts,))
    assert_matches(mine, tuple(g.detach() for g in grads))
    assert_matches(acts, tuple(e.detach() for e in evals))


class Counter(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def test_one_forward_for_k_targets():
    model, layer, x = CASES["inception_branch5x5"]()
    model.stem, model.fc = Counter(model.stem), Counter(model.fc)
    gf.grad_cam(model, layer, x, 0, attribute_to_layer_input=True)  # probes the shape
    model.stem.calls = model.fc.calls = 0
    gf.grad_cam(model, layer, x, targets=[0, 1, 2, 3, 4], attribute_to_layer_input=True)
    assert model.stem.calls == 1 and model.fc.calls == 1


def test_params_equal_loading_them():
    model, layer, x = CASES["basic_block_conv1"]()
    other, _, _ = CASES["basic_block_conv1"]()
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1.5).add_(0.1)
    params = {k: v.detach() for k, v in other.named_parameters()}
    before = copy.deepcopy(model.state_dict())
    assert_matches(
        gf.grad_cam(model, layer, x, 1, params=params, attribute_to_layer_input=True),
        captum(other, layer, x, 1),
    )
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_vmap_over_inputs_equals_a_loop():
    model, layer, _ = CASES["fire_expand3x3"]()
    xs = torch.randn(3, 2, 3, 6, 6, dtype=torch.float64)

    def explain(x):
        return gf.grad_cam(model, layer, x, targets=[0, 2], attribute_to_layer_input=True)

    assert_close(torch.func.vmap(explain)(xs), torch.stack([explain(x) for x in xs]))


@pytest.mark.parametrize("name", ["basic_block_conv1", "inplace_alias_chunk", "model_input"])
def test_gradient_of_the_cam_matches_finite_differences(name):
    model, layer, x = CASES[name]()
    params = {k: v.detach() for k, v in model.named_parameters()}
    generator = torch.Generator().manual_seed(0)
    direction = {
        k: torch.randn(v.shape, generator=generator, dtype=v.dtype) for k, v in params.items()
    }

    def loss(p):
        cams = gf.grad_cam(model, layer, x, targets=[1, 3], params=p, attribute_to_layer_input=True)
        return (cams[0] ** 2).sum() + (cams[1] * cams[0]).sum()

    grads = torch.func.grad(loss)(params)
    analytic = sum((grads[k] * direction[k]).sum() for k in params)
    eps = 1e-6
    numeric = (
        loss({k: params[k] + eps * direction[k] for k in params})
        - loss({k: params[k] - eps * direction[k] for k in params})
    ) / (2 * eps)
    assert abs(numeric.item()) > 1e-6
    torch.testing.assert_close(analytic, numeric, **FINITE_DIFFERENCES)


def test_a_forward_that_changes_between_runs_is_refused():
    """A model that makes its layer's input in a different call on every run: refused
    after two tries, in five forwards (the probe and the split twice, then a last probe
    whose spec is not tried)."""

    class Restless(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer, self.fc, self.runs = nn.Linear(3, 3), nn.Linear(3, 2), 0

        def forward(self, x):
            self.runs += 1
            for _ in range(self.runs):  # one more op on every run
                x = x * 1.0
            return self.fc(self.layer(x) + x)

    model, at_input = Restless().double(), dict(attribute_to_layer_input=True)
    with pytest.raises(
        gf.GradCamError,
        match=exactly(
            "grad_cam(..., layer='layer'): the forward pass runs differently each time "
            "(the layer's tensors change shape or come from other calls between two runs "
            "on the same inputs), so there is no single activation to explain. Make the "
            "forward deterministic for the call (model.eval()), or explain another layer."
        ),
    ):
        gf.grad_cam(model, "layer", torch.randn(2, 3, dtype=torch.float64), 0, **at_input)
    assert model.runs == 5


def test_an_identity_layer_output_counts_every_use():
    """A layer that returns its input unchanged (dropout in eval) returns the same tensor:
    its output is perturbed where that tensor was made, as Captum's autograd sees it."""

    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.drop = nn.Conv2d(3, 3, 3, padding=1), nn.Dropout(0.5)
            self.fc = nn.Linear(3, 4)

        def forward(self, x):
            h = torch.tanh(self.conv(x))
            return self.fc((self.drop(h) * h + h).mean((2, 3)))

    torch.manual_seed(0)
    model = Skip().double().eval()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    expected = LayerGradCam(model, model.drop).attribute(x, 1).detach()
    assert_matches(gf.grad_cam(model, "drop", x, 1), expected)


def test_a_layer_that_returns_its_input_beside_a_tensor_of_its_own():
    """The layer returns (its own tensor, its input): the first is perturbed as the layer
    returns it, the second where it was made, so each map counts every use, as in
    Captum's autograd (one map per returned tensor)."""

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, h):
            return torch.tanh(self.conv(h)), h

    class Paired(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.pair, self.fc = nn.Conv2d(3, 3, 1), Pair(), nn.Linear(3, 4)

        def forward(self, x):
            h = torch.sigmoid(self.stem(x))
            own, passed = self.pair(h)
            return self.fc((own * passed + h * h).mean((2, 3)))

    torch.manual_seed(0)
    model = Paired().double()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    own, passed = LayerGradCam(model, model.pair).attribute(x, 1)
    assert_matches(gf.grad_cam(model, "pair", x, 1), (own.detach(), passed.detach()))


def test_a_layer_that_starts_returning_its_input_is_probed_again():
    """The cached split says the layer makes a new tensor; when it starts returning its
    input unchanged, the next call notices and perturbs where that tensor is made."""

    class Gate(nn.Module):
        passthrough = False

        def forward(self, h):
            return h if self.passthrough else h * 1.0

    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.gate = nn.Conv2d(3, 3, 3, padding=1), Gate()
            self.fc = nn.Linear(3, 4)

        def forward(self, x):
            h = torch.tanh(self.conv(x))
            return self.fc((self.gate(h) * h + h).mean((2, 3)))

    torch.manual_seed(0)
    model = Gated().double().eval()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    new_tensor = LayerGradCam(model, model.gate).attribute(x, 1).detach()
    assert_matches(gf.grad_cam(model, "gate", x, 1), new_tensor)
    model.gate.passthrough = True
    same_tensor = LayerGradCam(model, model.gate).attribute(x, 1).detach()
    assert not torch.allclose(same_tensor, new_tensor)  # the two cases differ here
    assert_matches(gf.grad_cam(model, "gate", x, 1), same_tensor)


def test_an_identity_layer_beside_a_layer_explained_at_its_output():
    """Two layers in one call: the convolution's output is perturbed in its hook (an add),
    the dropout's output where the tensor it returns was made (the model's own add after
    the convolution). The hook's add must not count among the model's ops, or the
    model's add is taken for another one. Each map is Captum's for its layer."""

    class Shifted(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.drop = nn.Conv2d(3, 3, 3, padding=1), nn.Dropout(0.5)
            self.fc = nn.Linear(3, 4)

        def forward(self, x):
            h = self.conv(x) + 1.0
            return self.fc((self.drop(h) * h).mean((2, 3)))

    torch.manual_seed(0)
    model = Shifted().double().eval()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    at_conv, at_drop = gf.grad_cam(model, ["conv", "drop"], x, 1)
    assert_matches(at_conv, LayerGradCam(model, model.conv).attribute(x, 1).detach())
    assert_matches(at_drop, LayerGradCam(model, model.drop).attribute(x, 1).detach())


class DeviceDependent(nn.Module):
    """One more tanh before the layer on real devices than on the meta device (a fast
    path chosen by device type), so the spec from the meta probe names the wrong op.
    ``fail_on_real_run``: raise a RuntimeError on that run on a real device;
    ``layer_on_meta_only``: skip the layer on real devices."""

    def __init__(self, fail_on_real_run=None, layer_on_meta_only=False):
        super().__init__()
        self.conv, self.layer = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3, 4)
        self.fail_on_real_run, self.real_runs = fail_on_real_run, 0
        self.layer_on_meta_only = layer_on_meta_only

    def forward(self, x):
        h = self.conv(x)
        if x.device.type != "meta":
            self.real_runs += 1
            if self.real_runs == self.fail_on_real_run:
                raise RuntimeError("out of luck")
            h = torch.tanh(h)
            if self.layer_on_meta_only:
                return self.fc(h.mean((2, 3)))
        h = torch.tanh(h)
        return self.fc((self.layer(h) + h).mean((2, 3)))


def test_a_spec_from_the_meta_device_that_is_stale_is_probed_again_for_real():
    """The layer's input, also the shortcut, is traced on the meta device to the wrong
    tanh; the split finds it stale and probes again on the real inputs, at the input."""
    torch.manual_seed(0)
    model = DeviceDependent().double().eval()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    expected = (
        LayerGradCam(model, model.layer).attribute(x, 1, attribute_to_layer_input=True).detach()
    )
    model.real_runs = 0
    assert_matches(gf.grad_cam(model, "layer", x, 1, attribute_to_layer_input=True), expected)
    assert model.real_runs == 3  # the stale split, the probe again, the split
    model.real_runs = 0  # the fresh spec was kept: the next call runs the model once
    assert_matches(gf.grad_cam(model, "layer", x, 1, attribute_to_layer_input=True), expected)
    assert model.real_runs == 1


def test_a_layer_called_on_the_meta_device_only_is_named_as_never_called():
    """The probe on meta sees the layer; the real forward skips it, and so does the probe
    made again on the real inputs, whose spec is checked as the first one was."""
    model = DeviceDependent(layer_on_meta_only=True).double().eval()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    with pytest.raises(
        gf.GradCamError,
        match=exactly(
            "grad_cam(..., layer='layer'): the layer was not called during the model's "
            "forward pass, so it has no activation to explain. Pick a module that the "
            "forward actually uses (see model.named_modules())."
        ),
    ):
        gf.grad_cam(model, "layer", x, 1, attribute_to_layer_input=True)


def test_a_model_that_fails_when_probed_again_is_named_by_the_call():
    torch.manual_seed(0)
    model = DeviceDependent(fail_on_real_run=2).double().eval()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    with pytest.raises(gf.GradCamError, match=r"^grad_cam\(.*out of luck"):
        gf.grad_cam(model, "layer", x, 1, attribute_to_layer_input=True)


def test_a_layer_given_no_floats_on_real_devices_only_is_refused_at_its_input():
    """On the meta device the layer receives the float input; on real ones, integers."""

    class IntsOnRealDevices(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer, self.fc = nn.Identity(), nn.Linear(3, 2)

        def forward(self, x):
            self.layer(x if x.device.type == "meta" else x.long())
            return self.fc(x)

    with pytest.raises(
        gf.GradCamError,
        match=exactly(
            "grad_cam(..., layer='layer'): the layer's input holds no floating-point "
            "Tensor, so there is nothing to attribute to. Pick a layer whose input is a "
            "float Tensor (or a tuple holding some)."
        ),
    ):
        gf.grad_cam(
            IntsOnRealDevices().double(),
            "layer",
            torch.randn(2, 3, dtype=torch.float64),
            0,
            attribute_to_layer_input=True,
        )
