"""Tests for memlib.attacks (PGD, FGSM, AutoAttack wrapper, attack specs) and memlib.evaluate.accuracy.

Everything runs on CPU with a tiny conv net (BatchNorm + dropout, so eval mode matters) on 3x8x8 inputs,
or ResNet-18 at width 1/16 on 32x32 inputs, with fixed seeds.
"""

from __future__ import annotations

import copy
import time

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from memlib.attacks import (
    _start,
    attack,
    autoattack,
    ce_objective,
    eval_mode,
    fgsm,
    kl_objective,
    margin_objective,
    parse_attack,
    pgd,
)
from memlib.evaluate import accuracy
from memlib.models import build_model

NUM_CLASSES = 10


pytestmark = pytest.mark.usefixtures("one_thread")


class TinyNet(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES, dropout: float = 0.2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        )
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.features(x)))


def _protos() -> torch.Tensor:
    return 0.2 + 0.6 * torch.rand(NUM_CLASSES, 3, 8, 8, generator=torch.Generator().manual_seed(123))


def _data(n: int, seed: int, noise: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy copies of one fixed prototype image per class, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % NUM_CLASSES
    x = (_protos()[y] + noise * torch.randn(n, 3, 8, 8, generator=g)).clamp(0, 1)
    return x, y


def _random_model(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet().eval()


def _bordered_inputs(n: int = 8, seed: int = 0) -> torch.Tensor:
    """Random inputs in [0, 1] with whole rows exactly at 0 and at 1 (the clipping borders)."""
    x = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    x[:, :, 0, :] = 0.0
    x[:, :, -1, :] = 1.0
    x[:, 0, :, 0] = 0.0
    x[:, 1, :, -1] = 1.0
    return x


@pytest.fixture(scope="module")
def trained():
    """TinyNet trained briefly on 64 examples; 16 held-out examples of the same distribution."""
    torch.manual_seed(0)
    model = TinyNet()
    x_train, y_train = _data(64, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(model(x_train), y_train).backward()
        opt.step()
    for p in model.parameters():
        p.grad = None
    model.eval()
    x, y = _data(16, seed=2)
    return model, x, y


def _objective(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    if name == "ce":
        return ce_objective(y)
    if name == "margin":
        return margin_objective(y)
    with torch.no_grad(), eval_mode(model):
        return kl_objective(F.softmax(model(x), 1))


def _ce_mean(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad(), eval_mode(model):
        return F.cross_entropy(model(x), y).item()


def _acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad(), eval_mode(model):
        return (model(x).argmax(1) == y).float().mean().item()


# --- threat-model constraints -----------------------------------------------------------------------

@pytest.mark.parametrize("eps", [1 / 255, 8 / 255, 0.3])
@pytest.mark.parametrize("start", ["uniform", "normal", "zero"])
@pytest.mark.parametrize("objective", ["ce", "kl", "margin"])
def test_pgd_linf_stays_in_ball_and_box(objective: str, start: str, eps: float) -> None:
    model = _random_model()
    x = _bordered_inputs()
    y = torch.arange(len(x)) % NUM_CLASSES
    torch.manual_seed(1)
    # alpha > eps: every step overshoots, so the projection is what keeps the perturbation in the ball
    x_adv = pgd(model, x, _objective(objective, model, x, y), eps=eps, alpha=1.5 * eps, steps=3,
                norm="linf", start=start)
    delta = x_adv - x
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert not x_adv.requires_grad
    assert delta.abs().max().item() <= eps + 1e-6
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
    if not (objective == "kl" and start == "zero"):  # KL has zero gradient at x' = x: nothing moves
        # sign steps larger than eps saturate the ball wherever the box allows it
        assert delta.abs().max().item() >= eps - 1e-6
        assert (delta.abs() > 0.5 * eps).float().mean().item() > 0.5


@pytest.mark.parametrize("eps", [0.1, 0.5, 2.0])
@pytest.mark.parametrize("start", ["normal", "zero"])
@pytest.mark.parametrize("objective", ["ce", "kl", "margin"])
def test_pgd_l2_stays_in_ball_and_box(objective: str, start: str, eps: float) -> None:
    model = _random_model()
    x = _bordered_inputs()
    y = torch.arange(len(x)) % NUM_CLASSES
    torch.manual_seed(1)
    x_adv = pgd(model, x, _objective(objective, model, x, y), eps=eps, alpha=0.75 * eps, steps=3,
                norm="l2", start=start)
    norms = (x_adv - x).flatten(1).norm(dim=1)
    assert (norms <= eps + 1e-5).all(), norms
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
    if not (objective == "kl" and start == "zero"):
        assert norms.min().item() > 0.5 * eps  # the attack does move, close to the sphere


def test_uniform_start_rejected_for_l2_and_unknown_options() -> None:
    model, x = _random_model(), _bordered_inputs(2)
    obj = ce_objective(torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError):
        pgd(model, x, obj, eps=0.5, alpha=0.1, steps=1, norm="l2", start="uniform")
    with pytest.raises(ValueError):
        pgd(model, x, obj, eps=0.5, alpha=0.1, steps=1, norm="l1")
    with pytest.raises(ValueError):
        pgd(model, x, obj, eps=0.5, alpha=0.1, steps=1, start="gaussian")


def test_start_distributions() -> None:
    x = torch.full((64, 3, 8, 8), 0.5)
    torch.manual_seed(0)
    d = _start(x, 0.1, "linf", "uniform")
    assert d.abs().max() <= 0.1 and d.abs().max() > 0.09 and abs(d.mean().item()) < 0.01
    d = _start(x, 0.1, "linf", "normal")
    assert 0.0008 < d.std().item() < 0.0012  # 0.001 * N(0, 1), as in the authors' TRADES attack
    d = _start(x, 1e-4, "linf", "normal")
    assert d.abs().max().item() <= 1e-4 + 1e-6  # still projected onto the ball (float32 rounding at 0.5)
    assert torch.equal(_start(x, 0.1, "l2", "zero"), torch.zeros_like(x))
    # defaults: uniform for l-inf, normal for l2 (same RNG stream as an explicit start)
    model, xb = _random_model(), _bordered_inputs(4)
    obj = ce_objective(torch.zeros(4, dtype=torch.long))
    for norm, start in (("linf", "uniform"), ("l2", "normal")):
        torch.manual_seed(3)
        a = pgd(model, xb, obj, eps=0.3, alpha=0.05, steps=1, norm=norm)
        torch.manual_seed(3)
        b = pgd(model, xb, obj, eps=0.3, alpha=0.05, steps=1, norm=norm, start=start)
        assert torch.equal(a, b)


class _Recording(nn.Module):
    """A model that keeps every input it is called on."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.inputs = model, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach())
        return self.model(x)


def test_unclamped_start_leaves_the_box_but_every_step_returns_to_it() -> None:
    """clamp_start=False (the authors' PGD+TE, TRADES and evaluation): the first gradient is taken at
    x + start, outside [0, 1] where x is at 0 or 1; every later point and the result are in [0, 1] and in
    the ball all the same."""
    x = _bordered_inputs(8)  # pixels at 0 and at 1
    obj = ce_objective(torch.zeros(8, dtype=torch.long))
    for norm, start, eps in (("linf", "uniform", 0.1), ("linf", "normal", 0.1), ("l2", "normal", 0.5)):
        for clamp in (True, False):
            model = _Recording(_random_model())
            torch.manual_seed(1)
            x_adv = pgd(model, x, obj, eps=eps, alpha=eps / 4, steps=3, norm=norm, start=start,
                        clamp_start=clamp, fold_bn=False)
            first, later = model.inputs[0], model.inputs[1:]
            assert len(later) == 2 and all(z.min() >= 0 and z.max() <= 1 for z in later)
            assert (first.min() >= 0 and first.max() <= 1) == clamp, (norm, start, clamp)
            assert x_adv.min() >= 0 and x_adv.max() <= 1
            delta = (x_adv - x).flatten(1)
            dist = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
            assert (dist <= eps + 1e-6).all()


# --- the PGD step itself, checked by hand -----------------------------------------------------------

def test_fgsm_is_one_hand_computed_pgd_step_from_a_uniform_start(trained) -> None:
    model, x, y = trained
    eps, alpha = 8 / 255, 1.25 * 8 / 255
    torch.manual_seed(5)
    out = fgsm(model, x, ce_objective(y), eps=eps, alpha=alpha)
    torch.manual_seed(5)
    same = pgd(model, x, ce_objective(y), eps=eps, alpha=alpha, steps=1, start="uniform")
    assert torch.equal(out, same)

    torch.manual_seed(5)
    delta0 = torch.empty_like(x).uniform_(-eps, eps)
    delta0 = (x + delta0).clamp(0, 1) - x
    x0 = (x + delta0).requires_grad_(True)
    with eval_mode(model):
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x0), y, reduction="sum"), x0)
    expected = (x + (delta0 + alpha * grad.sign()).clamp(-eps, eps)).clamp(0, 1)
    assert torch.allclose(out, expected, atol=1e-6)
    assert not torch.equal(out, (x + delta0))  # the step moved


def test_l2_step_is_normalized_gradient(trained) -> None:
    model, x, y = trained
    eps, alpha = 1.0, 0.3
    out = pgd(model, x, ce_objective(y), eps=eps, alpha=alpha, steps=1, norm="l2", start="zero")
    x0 = x.clone().requires_grad_(True)
    with eval_mode(model):
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x0), y, reduction="sum"), x0)
    unit = grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    assert torch.allclose(out, (x + alpha * unit).clamp(0, 1), atol=1e-6)
    # a step longer than eps is projected back onto the sphere (before clipping to [0, 1])
    far = pgd(model, x, ce_objective(y), eps=0.2, alpha=5.0, steps=1, norm="l2", start="zero")
    assert torch.allclose(far, (x + 0.2 * unit).clamp(0, 1), atol=1e-6)


# --- attack strength --------------------------------------------------------------------------------

def test_pgd_loss_exceeds_random_start_and_clean_loss(trained) -> None:
    model, x, y = trained
    eps, alpha = 8 / 255, 2 / 255
    torch.manual_seed(7)
    x_start = x + _start(x, eps, "linf", "uniform")
    torch.manual_seed(7)  # pgd draws the very same start first
    x_adv = pgd(model, x, ce_objective(y), eps=eps, alpha=alpha, steps=10)
    clean, at_start, adv = _ce_mean(model, x, y), _ce_mean(model, x_start, y), _ce_mean(model, x_adv, y)
    assert adv > at_start + 0.1, (clean, at_start, adv)
    assert at_start >= clean - 1e-3, (clean, at_start, adv)
    assert adv > clean + 0.1
    # per example the attack rarely ends below its start
    with torch.no_grad(), eval_mode(model):
        per_start = F.cross_entropy(model(x_start), y, reduction="none")
        per_adv = F.cross_entropy(model(x_adv), y, reduction="none")
    assert (per_adv >= per_start - 1e-4).float().mean().item() >= 0.9


@pytest.mark.parametrize("objective", ["ce", "margin"])
def test_more_steps_do_not_hurt(trained, objective: str) -> None:
    model, x, y = trained
    obj = _objective(objective, model, x, y)
    values = {}
    for steps in (1, 20):
        torch.manual_seed(11)
        x_adv = pgd(model, x, obj, eps=8 / 255, alpha=2 / 255, steps=steps)
        with torch.no_grad(), eval_mode(model):
            values[steps] = obj(model(x_adv)).mean().item()
    with torch.no_grad(), eval_mode(model):
        clean = obj(model(x)).mean().item()
    assert values[20] >= values[1] - 1e-3, values
    assert values[20] > clean, (clean, values)


@pytest.mark.parametrize("objective", ["ce", "margin"])
def test_restarts_keep_the_best_restart_per_example(trained, objective: str) -> None:
    model, x, y = trained
    obj = _objective(objective, model, x, y)
    kw = dict(eps=8 / 255, alpha=1 / 255, steps=2)  # short runs: the restarts end at different values
    torch.manual_seed(21)
    best = pgd(model, x, obj, restarts=3, **kw)
    torch.manual_seed(21)  # the three restarts draw their starts in sequence, nothing else draws
    singles = [pgd(model, x, obj, restarts=1, **kw) for _ in range(3)]
    with torch.no_grad(), eval_mode(model):
        values = torch.stack([obj(model(s)) for s in singles])  # (3, B)
        best_value = obj(model(best))
    winner = values.argmax(0)
    # the test only discriminates if different restarts win on different examples
    assert len(set(winner.tolist())) >= 2, values
    assert torch.allclose(best_value, values.max(0).values, atol=1e-5)
    assert (best_value >= values - 1e-6).all()
    for i, w in enumerate(winner.tolist()):
        assert torch.equal(best[i], singles[w][i])


# --- C&W margin ---------------------------------------------------------------------------------------

def test_margin_objective_by_hand_and_sign() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, NUM_CLASSES, generator=g)
    y = torch.randint(0, NUM_CLASSES, (64,), generator=g)
    value = margin_objective(y)(logits)
    for i in range(64):
        others = [logits[i, j].item() for j in range(NUM_CLASSES) if j != y[i].item()]
        assert value[i].item() == pytest.approx(max(others) - logits[i, y[i]].item(), abs=1e-6)
    wrong = logits.argmax(1) != y
    assert wrong.any() and (~wrong).any()
    assert torch.equal(value > 0, wrong)


def test_cw_attack_accuracy_at_most_natural(trained) -> None:
    model, x, y = trained
    nat = accuracy(model, x, y, "natural", eps=8 / 255, alpha=2 / 255)
    torch.manual_seed(0)
    cw = accuracy(model, x, y, "cw-20", eps=8 / 255, alpha=2 / 255)
    assert nat > 0.5
    assert cw <= nat
    assert cw < nat  # at this eps the tiny model is not robust on every example
    # and the margin is positive exactly on the examples the CW attack fools
    torch.manual_seed(0)
    x_adv = attack(model, x, y, "cw-20", eps=8 / 255, alpha=2 / 255)
    with torch.no_grad():
        logits = model(x_adv)
    assert torch.equal(margin_objective(y)(logits) > 0, logits.argmax(1) != y)


def test_attack_specs_dispatch_to_objectives(trained) -> None:
    model, x, y = trained
    kw = dict(eps=8 / 255, alpha=2 / 255)
    assert attack(model, x, y, "natural", **kw) is x
    for spec, obj in (("pgd-3", ce_objective(y)), ("cw-3", margin_objective(y))):
        torch.manual_seed(2)
        a = attack(model, x, y, spec, **kw)
        torch.manual_seed(2)
        b = pgd(model, x, obj, steps=3, **kw)
        assert torch.equal(a, b), spec
    torch.manual_seed(2)
    a = attack(model, x, y, "pgd-3", **kw)
    torch.manual_seed(2)
    c = pgd(model, x, margin_objective(y), steps=3, **kw)
    assert not torch.equal(a, c)  # the two objectives do lead to different examples


# --- eval mode, BatchNorm statistics, parameter gradients ---------------------------------------------

def _flags(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def _record_modes(model: nn.Module) -> tuple[list[bool], list]:
    seen: list[bool] = []
    handles = [m.register_forward_pre_hook(lambda mod, inp: seen.append(mod.training)) for m in model.modules()]
    return seen, handles


def _attacks(model, x, y):
    """One call of each attack kind (l-inf and l2 PGD with every objective, restarts, FGSM)."""
    yield lambda: pgd(model, x, ce_objective(y), eps=8 / 255, alpha=2 / 255, steps=2)
    yield lambda: pgd(model, x, margin_objective(y), eps=8 / 255, alpha=2 / 255, steps=2, restarts=2)
    yield lambda: pgd(model, x, ce_objective(y), eps=0.5, alpha=0.1, steps=2, norm="l2")
    yield lambda: fgsm(model, x, ce_objective(y), eps=8 / 255, alpha=10 / 255)
    p = torch.full((len(x), NUM_CLASSES), 1.0 / NUM_CLASSES)
    yield lambda: pgd(model, x, kl_objective(p), eps=8 / 255, alpha=2 / 255, steps=2, start="normal")


@pytest.mark.parametrize("setup", ["train_with_eval_submodule", "eval"])
def test_attacks_run_in_eval_mode_and_restore_flags(setup: str) -> None:
    model = _random_model()
    if setup == "eval":
        model.eval()
    else:
        model.train()
        model.features[1].eval()  # a frozen BatchNorm inside a training model
    before = _flags(model)
    assert any(before) or setup == "eval"
    x, y = _bordered_inputs(4), torch.arange(4)
    seen, handles = _record_modes(model)
    for run in _attacks(model, x, y):
        seen.clear()
        run()
        assert seen and not any(seen), "a module ran in train mode during the attack"
        assert _flags(model) == before
    for h in handles:
        h.remove()


def test_eval_mode_restores_flags_on_error() -> None:
    model = _random_model().train()
    model.drop.eval()
    before = _flags(model)

    def broken(logits):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        pgd(model, _bordered_inputs(2), broken, eps=0.1, alpha=0.01, steps=1)
    assert _flags(model) == before


def _bn_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


def test_batchnorm_statistics_unchanged_by_attacks_on_a_train_mode_resnet() -> None:
    torch.manual_seed(0)
    model = build_model("resnet18", width=0.0625).train()
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.arange(4)
    model(x)  # one training forward: running stats move away from their init
    stats = _bn_state(model)
    assert stats and any(v.ne(0).any() for k, v in stats.items() if "running_mean" in k)
    for run in _attacks(model, x, y):
        run()
        after = _bn_state(model)
        for k in stats:
            assert torch.equal(after[k], stats[k]), k
    assert model.training and all(m.training for m in model.modules())
    model(x)  # sanity: a training forward does change them (so the check above can fail)
    assert not all(torch.equal(_bn_state(model)[k], stats[k]) for k in stats)


def test_attacks_populate_no_parameter_gradients(trained) -> None:
    model = copy.deepcopy(trained[0]).train()
    x, y = trained[1], trained[2]
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    for run in _attacks(model, x, y):
        out = run()
        assert not out.requires_grad
        assert all(p.grad is None for p in model.parameters())
    # existing gradients (mid-step accumulation) are left untouched too
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    for run in _attacks(model, x, y):
        run()
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())


# --- attack specs -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "expected"), [
    ("natural", ("natural", 0)), ("pgd-10", ("pgd", 10)), ("pgd-1", ("pgd", 1)), ("cw-1000", ("cw", 1000)),
    ("autoattack", ("autoattack", 0)), ("aa", ("autoattack", 0)), (" PGD-20 ", ("pgd", 20)), ("AA", ("autoattack", 0)),
])
def test_parse_attack_accepts(spec: str, expected: tuple[str, int]) -> None:
    assert parse_attack(spec) == expected


@pytest.mark.parametrize("spec", ["pgd-0", "cw-0", "fgm-3", "", "pgd", "pgd-", "pgd-10x", "pgd--3", "pgd\n10", "fgsm"])
def test_parse_attack_rejects_with_one_line(spec: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_attack(spec)
    message = str(info.value)
    assert message and "\n" not in message
    assert "natural" in message and "pgd" in message  # says what is accepted


# --- AutoAttack -------------------------------------------------------------------------------------

def test_autoattack_wrapper(trained) -> None:
    model = copy.deepcopy(trained[0]).train()  # the wrapper must switch to eval mode itself
    model.features[4].eval()
    x, y = trained[1], trained[2]
    eps = 16 / 255  # the tiny model keeps few robust examples: all four attacks run, briefly
    flags, stats = _flags(model), _bn_state(model)
    t0 = time.time()
    x_adv = autoattack(model, x, y, eps=eps)
    seconds = time.time() - t0
    print(f"standard AutoAttack on {len(x)} examples: {seconds:.1f} s")
    assert isinstance(x_adv, torch.Tensor) and x_adv.shape == x.shape
    assert (x_adv - x).abs().max().item() <= eps + 1e-6
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
    assert _flags(model) == flags
    assert all(torch.equal(_bn_state(model)[k], stats[k]) for k in stats)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())

    with torch.no_grad(), eval_mode(model):
        clean_pred, adv_pred = model(x).argmax(1), model(x_adv).argmax(1)
    nat, aa = (clean_pred == y).float().mean().item(), (adv_pred == y).float().mean().item()
    torch.manual_seed(0)
    pgd10 = _acc(model, pgd(model, x, ce_objective(y), eps=eps, alpha=eps / 4, steps=10), y)
    assert nat >= 0.75
    assert aa <= pgd10 <= nat
    assert aa < nat  # the wrapper returns the attacked examples, not the clean ones
    # examples misclassified from the start are returned unchanged
    assert torch.equal(x_adv[clean_pred != y], x[clean_pred != y])
    # the evaluation path gives the same robust accuracy (AutoAttack is seeded)
    assert accuracy(model, x, y, "aa", eps=eps, alpha=eps / 4) == pytest.approx(aa)


# --- evaluate.accuracy ------------------------------------------------------------------------------

def test_natural_accuracy_is_argmax_accuracy(trained) -> None:
    model, x, y = trained
    y = y.clone()
    y[:5] = (y[:5] + 1) % NUM_CLASSES  # some labels wrong, so the accuracy is strictly between 0 and 1
    with torch.no_grad():
        expected = (model(x).argmax(1) == y).float().mean().item()
    assert 0 < expected < 1
    kw = dict(eps=8 / 255, alpha=2 / 255)
    assert accuracy(model, x, y, "natural", **kw) == pytest.approx(expected)
    assert accuracy(model, x, y, "natural", batch_size=5, **kw) == pytest.approx(expected)
    # uint8 images are scaled by 1/255
    x8 = (x * 255).round().to(torch.uint8)
    with torch.no_grad():
        expected8 = (model(x8.float() / 255).argmax(1) == y).float().mean().item()
    assert accuracy(model, x8, y, "natural", **kw) == pytest.approx(expected8)
    # a train-mode model is evaluated in eval mode and left in train mode
    train_model = copy.deepcopy(model).train()
    assert accuracy(train_model, x, y, "natural", **kw) == pytest.approx(expected)
    assert train_model.training
    assert accuracy(model, x[:0], y[:0], "natural", **kw) != accuracy(model, x[:0], y[:0], "natural", **kw)  # nan


def test_pgd_accuracy_matches_a_direct_attack(trained) -> None:
    model, x, y = trained
    torch.manual_seed(4)
    expected = _acc(model, pgd(model, x, ce_objective(y), eps=8 / 255, alpha=2 / 255, steps=10), y)
    torch.manual_seed(4)
    assert accuracy(model, x, y, "pgd-10", eps=8 / 255, alpha=2 / 255) == pytest.approx(expected)
    assert expected < _acc(model, x, y)


def test_pgd_under_cpu_bfloat16_autocast_stays_in_the_ball_and_raises_the_loss(trained) -> None:
    """``cpu_amp``: the attack runs under bf16 autocast on the CPU; x' stays fp32, in the ball and in [0, 1]."""
    model, x, y = trained
    eps = 8 / 255
    torch.manual_seed(7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_adv = pgd(model, x, ce_objective(y), eps=eps, alpha=2 / 255, steps=10)
    assert x_adv.dtype == torch.float32
    assert (x_adv - x).abs().max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert _ce_mean(model, x_adv, y) > _ce_mean(model, x, y) + 0.1
