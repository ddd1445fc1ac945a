"""Tests for memlib.models: shapes, gradients, widths, parameter counts, options."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from memlib.models import MODELS, Normalize, build_model, count_parameters, is_known_model

ARCHS = ("resnet18", "preact_resnet18", "wrn-28-10", "wrn-16-2", "vgg16", "densenet121", "dla")
WIDTHS = (0.0625, 0.125, 0.25, 0.5, 1.0)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2471, 0.2435, 0.2616)


def _meta_count(name: str, **kwargs) -> int:
    with torch.device("meta"):
        return count_parameters(build_model(name, **kwargs))


def _inputs(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize(
    ("name", "width"), [(name, 0.125) for name in ARCHS] + [("wrn-16-2", 1.0)]
)
def test_forward_backward(name: str, width: float, num_classes: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=num_classes, width=width)
    model.train()
    out = model(_inputs())
    assert out.shape == (4, num_classes)
    assert torch.isfinite(out).all()
    out.logsumexp(dim=1).mean().backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(param.grad).all(), f"{name}: non-finite gradient for {pname}"


@pytest.mark.parametrize("name", ARCHS)
def test_smallest_width_runs_and_counts_grow_with_width(name: str) -> None:
    model = build_model(name, width=0.0625).eval()
    with torch.no_grad():
        assert model(_inputs(2)).shape == (2, 10)
    counts = [_meta_count(name, width=w) for w in WIDTHS]
    assert counts == sorted(counts) and len(set(counts)) == len(counts), counts


def test_width_shrinks_resnet18() -> None:
    small, full = _meta_count("resnet18", width=0.25), _meta_count("resnet18", width=1.0)
    assert small < 0.1 * full
    net = build_model("resnet18", width=0.125).net
    assert net.conv1.out_channels == 8
    assert net.linear.in_features == 64


def test_standard_parameter_counts() -> None:
    assert count_parameters(build_model("resnet18")) == 11_173_962
    wrn = _meta_count("wrn-28-10")
    assert abs(wrn - 36_479_194) <= 0.01 * 36_479_194
    assert _meta_count("wrn") == wrn


def test_normalize_is_buffer_and_applied_before_net() -> None:
    model = build_model("resnet18", width=0.125, mean=CIFAR_MEAN, std=CIFAR_STD).eval()
    assert isinstance(model.normalize, Normalize)
    assert list(model.normalize.parameters()) == []
    assert {"normalize.mean", "normalize.std"} <= set(model.state_dict())
    x = _inputs()
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.net((x - mean) / std))
        assert not torch.allclose(model(x), model.net(x))
    assert isinstance(build_model("resnet18", width=0.125).normalize, nn.Identity)


def test_wrn_dropout_active_only_in_train_mode() -> None:
    torch.manual_seed(0)
    model = build_model("wrn-16-2", width=0.5, dropout=0.3)
    assert any(isinstance(m, nn.Dropout) and m.p == 0.3 for m in model.modules())
    x = _inputs()
    with torch.no_grad():
        model.train()
        assert not torch.allclose(model(x), model(x))
        model.eval()
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
        no_dropout = build_model("wrn-16-2", width=0.5).train()
        torch.testing.assert_close(no_dropout(x), no_dropout(x), rtol=0, atol=0)


def test_head_dropout_for_other_models() -> None:
    model = build_model("resnet18", width=0.125, dropout=0.5)
    assert model.net.dropout.p == 0.5
    x = _inputs()
    with torch.no_grad():
        assert not torch.allclose(model.train()(x), model(x))
        torch.testing.assert_close(model.eval()(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "foo"},
        {"name": "resnet"},
        {"name": "wrn-27-10"},
        {"name": "wrn-28-0"},
        {"name": "resnet18", "width": 0.0},
        {"name": "resnet18", "width": -0.5},
        {"name": "resnet18", "dropout": 1.0},
        {"name": "resnet18", "dropout": -0.1},
        {"name": "resnet18", "mean": CIFAR_MEAN},
    ],
)
def test_invalid_arguments_raise_one_line_value_error(kwargs: dict) -> None:
    with pytest.raises(ValueError) as info:
        build_model(**kwargs)
    message = str(info.value)
    assert message and "\n" not in message
    if kwargs["name"] not in MODELS:
        assert "unknown model" in message and "resnet18" in message and "wrn-28-10" in message


def test_is_known_model() -> None:
    for name in (*MODELS, "wrn-28-10", "wrn-34-10", "wrn-34-20", "wrn-16-2", "wrn-10-1"):
        assert is_known_model(name), name
    for name in ("foo", "resnet", "wrn-27-10", "wrn-28-0", "wrn-4-1", "wrn-28", "wrn-28-10x"):
        assert not is_known_model(name), name


@pytest.mark.parametrize("name", ARCHS)
def test_channels_last_matches_contiguous(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, width=0.125).eval()
    x = _inputs()
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), expected,
                                   rtol=1e-4, atol=1e-5)
        model = model.to(memory_format=torch.channels_last)
        torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), expected,
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ARCHS)
def test_autocast(name: str) -> None:
    model = build_model(name, width=0.125, mean=CIFAR_MEAN, std=CIFAR_STD).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(_inputs())
    assert out.shape == (4, 10)
    assert torch.isfinite(out.float()).all()


def test_build_is_deterministic_and_accepts_other_input_sizes() -> None:
    torch.manual_seed(0)
    first = build_model("wrn-16-2", width=0.25).state_dict()
    torch.manual_seed(0)
    second = build_model("wrn-16-2", width=0.25).state_dict()
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0)
    model = build_model("densenet121", width=0.125).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 64)).shape == (2, 10)
