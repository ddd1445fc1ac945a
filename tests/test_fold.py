"""BatchNorm folded into convolutions for the eval-mode passes of attacks (``memlib.models.fold_bn``).

The folded view must be the same function as the eval-mode model (outputs and input gradients equal up to
float rounding) for every architecture, must follow the weights as they change, must own no state, and the
attacks built on it must keep their guarantees. Everything on CPU, with random BatchNorm statistics so that
a wrong fold (say, the running mean left out) shows.
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from memlib.attacks import ce_objective, pgd
from memlib.config import RunConfig
from memlib.evaluate import predict
from memlib.models import MODELS, fold_bn

pytestmark = pytest.mark.usefixtures("one_thread")

# BatchNorms that follow a convolution directly, out of all of them, per architecture.
EXPECTED_FOLDED = {"resnet18": (20, 20), "preact_resnet18": (8, 17), "wrn": (13, 25), "vgg16": (13, 13),
                   "densenet121": (58, 120), "dla": (37, 37)}


def _model(name: str, seed: int = 0, normalize: bool = False) -> nn.Module:
    from memlib.models import build_model
    torch.manual_seed(seed)
    kw = dict(mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26)) if normalize else {}
    model = build_model(name, width=0.125, **kw)
    _randomize_bn(model)
    return model.eval()


def _randomize_bn(model: nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)


def _bn_calls(model: nn.Module, fn) -> int:
    """How many BatchNorm modules of ``model`` run during ``fn()``."""
    calls = []
    hooks = [m.register_forward_hook(lambda *a: calls.append(1)) for m in model.modules()
             if isinstance(m, nn.BatchNorm2d)]
    try:
        fn()
    finally:
        for h in hooks:
            h.remove()
    return len(calls)


def _input_grad(net: nn.Module, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Gradient of a fixed random linear function of the logits (a CE of a confident random net is flat)."""
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((net(x) * w).sum(), x)
    return grad


@pytest.mark.parametrize("name", MODELS)
def test_folded_view_is_the_same_function_with_the_same_input_gradient(name):
    model = _model(name, normalize=name == "resnet18")
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    w = torch.randn(6, 10, generator=torch.Generator().manual_seed(3))
    view = fold_bn(model)
    with torch.no_grad():
        ref, out = model(x), view(x)
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()
    folded, total = EXPECTED_FOLDED[name]
    assert _bn_calls(model, lambda: model(x)) == total
    assert _bn_calls(model, lambda: view(x)) == total - folded  # the folded ones no longer run
    # in float64 the fold is exact up to 1e-10 (in float32 rounding alone reaches 6% of a gradient as
    # small as a random DLA's); float64 is what tells a wrong fold from rounding
    model.double()
    g_ref, g_out = _input_grad(model, x.double(), w.double()), _input_grad(fold_bn(model), x.double(), w.double())
    assert (g_out - g_ref).abs().max() <= 1e-10 * g_ref.abs().max()


def test_folded_view_follows_weight_updates_and_statistics():
    model = _model("resnet18")
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    fold_bn(model)
    with torch.no_grad():  # an optimizer step and new running statistics after the view was made
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    _randomize_bn(model, seed=7)
    with torch.no_grad():
        ref, out = model(x), fold_bn(model)(x)
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_folded_view_owns_no_state_and_does_not_keep_the_model_alive():
    model = _model("resnet18")
    keys = list(model.state_dict())
    fold_bn(model)
    assert list(model.state_dict()) == keys and not any(".folded" in k for k in keys)
    assert all(p.grad is None for p in model.parameters())
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


def test_fold_bn_refuses_a_model_in_train_mode():
    model = _model("resnet18").train()
    with pytest.raises(RuntimeError, match="eval mode"):
        fold_bn(model)


def test_untraceable_or_bn_free_models_are_attacked_as_they_are():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(4, 10)

        def forward(self, x):
            h = self.bn(self.conv(x))
            if h.sum() > 0:  # fx cannot trace this
                h = h * 2
            return self.fc(h.mean((2, 3)))

    odd = DataDependent().eval()
    assert fold_bn(odd) is odd
    plain = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)).eval()
    assert fold_bn(plain) is plain
    x, y = torch.rand(4, 3, 32, 32), torch.arange(4)
    x_adv = pgd(odd, x, ce_objective(y), eps=8 / 255, alpha=2 / 255, steps=3)
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1


@pytest.mark.parametrize("name", ["resnet18", "preact_resnet18"])
def test_pgd_with_folding_matches_pgd_without(name):
    """One step from a zero start moves along the sign of the same input gradient; ten steps stay in the
    ball, restore train mode, leave parameter gradients alone and reach a loss as high as without folding."""
    model = _model(name).train()
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    y = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(5))
    kw = dict(eps=8 / 255, alpha=2 / 255, norm="linf")
    one = [pgd(model, x, ce_objective(y), steps=1, start="zero", fold_bn=f, **kw) for f in (True, False)]
    assert (one[0] != one[1]).float().mean() < 1e-3
    torch.manual_seed(6)
    folded = pgd(model, x, ce_objective(y), steps=10, fold_bn=True, **kw)
    torch.manual_seed(6)
    plain = pgd(model, x, ce_objective(y), steps=10, fold_bn=False, **kw)
    assert model.training and all(p.grad is None for p in model.parameters())
    assert (folded - x).abs().max() <= 8 / 255 + 1e-6 and folded.min() >= 0 and folded.max() <= 1
    model.eval()
    with torch.no_grad():
        clean, loss_f, loss_p = (F.cross_entropy(model(v), y).item() for v in (x, folded, plain))
    assert loss_f > clean and loss_f == pytest.approx(loss_p, rel=0.05)


def test_predict_with_and_without_folding_agree_on_natural_inputs():
    model = _model("resnet18")
    images = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(8))
    labels = torch.randint(0, 10, (20,), generator=torch.Generator().manual_seed(9))
    kw = dict(eps=8 / 255, alpha=2 / 255)
    assert torch.equal(predict(model, images, labels, "natural", fold_bn=True, **kw),
                       predict(model, images, labels, "natural", fold_bn=False, **kw))


def test_fold_bn_key_default_keeps_run_ids_and_false_is_a_run_of_its_own():
    assert RunConfig().fold_bn is True
    assert RunConfig().run_id("x") == RunConfig(fold_bn=True).run_id("x")
    assert RunConfig().run_id("x") != RunConfig(fold_bn=False).run_id("x")


def test_channels_last_on_a_multithreaded_cpu_only_with_folding():
    from memlib.runs import uses_channels_last
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert uses_channels_last(RunConfig(), "cpu")
        assert not uses_channels_last(RunConfig(fold_bn=False), "cpu")  # the layout of runs made before folding
        assert not uses_channels_last(RunConfig(channels_last=False), "cpu")
        torch.set_num_threads(1)
        assert uses_channels_last(RunConfig(fold_bn=False), "cpu") and uses_channels_last(RunConfig(), "cpu")
    finally:
        torch.set_num_threads(threads)
