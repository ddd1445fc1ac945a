"""Tests for memlib.methods: each training objective against a hand computation on a fixed batch.

The attack is injected (a Context whose ``attack`` returns a fixed x_adv and records the objective it was
given), so the losses are deterministic; reference values are computed in float64 from the raw softmax
formula, never with the library's helpers. The model has BatchNorm with non-default running statistics,
so train-mode and eval-mode predictions differ and a method using the wrong mode is caught.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import memlib.config
from memlib.attacks import fgsm, pgd
from memlib.config import RunConfig
from memlib.methods import METHODS, Context, mix, pgd_at, pgd_at_te, standard, trades, trades_te

C = 10  # classes
N = 20  # training-set size (rows of the soft-label table)
IDX = torch.tensor([3, 7, 0, 12, 19, 5])  # example ids of the batch
B = len(IDX)


pytestmark = pytest.mark.usefixtures("one_thread")


class TinyNet(nn.Module):
    def __init__(self, batchnorm: bool = True) -> None:
        super().__init__()
        norm = (lambda c: nn.BatchNorm2d(c)) if batchnorm else (lambda c: nn.Identity())
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), norm(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), norm(16), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        )
        self.fc = nn.Linear(64, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def _model(seed: int = 0, batchnorm: bool = True) -> TinyNet:
    torch.manual_seed(seed)
    model = TinyNet(batchnorm)
    g = torch.Generator().manual_seed(seed + 100)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-default statistics: eval mode != train mode
            m.running_mean.copy_(0.3 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
    return model.train()


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, 3, 8, 8, generator=g)
    y = torch.randint(0, C, (B,), generator=g)
    x_adv = (x + (8 / 255) * torch.sign(torch.randn(x.shape, generator=g))).clamp(0, 1)
    return x, y, x_adv


def _soft_labels(seed: int = 0) -> torch.Tensor:
    """A running ensemble mid-training: positive rows, not normalized (they sum to 1 - eta^k)."""
    g = torch.Generator().manual_seed(seed)
    return 0.7 * torch.softmax(2 * torch.randn(N, C, generator=g), 1)


class FixedAttack(Context):
    """A Context whose training attack returns a given x_adv and records what it was asked to maximize."""

    def __init__(self, cfg: RunConfig, epoch: int, soft_labels=None, x_adv=None) -> None:
        super().__init__(cfg, epoch, soft_labels)
        self.x_adv = x_adv
        self.calls: list[dict] = []

    def attack(self, model, x, objective, start=None):
        self.calls.append({"objective": objective, "start": start})
        return self.x_adv.clone()


# --- float64 reference formulas -------------------------------------------------------------------

def _probs(logits: torch.Tensor) -> torch.Tensor:
    z = logits.double()
    e = torch.exp(z - z.max(1, keepdim=True).values)
    return e / e.sum(1, keepdim=True)


def _ce_per_example(logits: torch.Tensor, y: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    logp = torch.log(_probs(logits))
    nll = -logp[torch.arange(len(y)), y]
    return (1 - smoothing) * nll + smoothing * (-logp).mean(1)


def _ce(logits, y, smoothing: float = 0.0) -> torch.Tensor:
    return _ce_per_example(logits, y, smoothing).mean()


def _kl_per_example(p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    p = p.double()
    return (p * (torch.log(p) - torch.log(_probs(logits_q)))).sum(1)


def _te_per_example(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((_probs(logits) - target.double()) ** 2).mean(1)


def _weight(cfg: RunConfig, epoch: int) -> float:
    if epoch < cfg.te_start:
        return 0.0
    if epoch >= cfg.te_end:
        return cfg.te_weight
    t = (epoch - cfg.te_start) / (cfg.te_end - cfg.te_start)
    return cfg.te_weight * math.exp(-5 * (1 - t) ** 2)


def _reference(model: nn.Module, x, x_adv):
    """Train-mode logits on x and x_adv and the eval-mode clean probabilities, from a copy of the model."""
    ref = copy.deepcopy(model)
    with torch.no_grad():
        p_eval = _probs(ref.eval()(x))
        ref.train()
        return ref(x), ref(x_adv), p_eval


def _close(a, b, tol: float = 1e-5) -> None:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    assert torch.allclose(a, b, rtol=tol, atol=tol), (a, b)


def _random_logits(seed: int = 9) -> torch.Tensor:
    return 3 * torch.randn(B, C, generator=torch.Generator().manual_seed(seed))


# --- plain methods --------------------------------------------------------------------------------

def test_standard_is_clean_ce() -> None:
    model, (x, y, x_adv) = _model(), _batch()
    ctx = FixedAttack(RunConfig(method="standard"), 1, x_adv=x_adv)
    logits_nat, _, _ = _reference(model, x, x_adv)
    step = standard(model, x, y, IDX, ctx)
    _close(step.loss.item(), _ce(logits_nat, y))
    assert not ctx.calls  # no attack


def test_pgd_at_is_ce_on_the_adversarial_batch() -> None:
    model, (x, y, x_adv) = _model(), _batch()
    ctx = FixedAttack(RunConfig(method="pgd_at"), 1, x_adv=x_adv)
    logits_nat, logits_adv, _ = _reference(model, x, x_adv)
    step = pgd_at(model, x, y, IDX, ctx)
    _close(step.loss.item(), _ce(logits_adv, y))
    assert abs(_ce(logits_adv, y) - _ce(logits_nat, y)) > 1e-3  # x_adv does matter here
    _close(step.logits.detach(), logits_adv)
    assert model.training
    (call,) = ctx.calls
    assert call["start"] is None  # the config's default start (uniform for l-inf)
    z = _random_logits()
    _close(call["objective"](z), _ce_per_example(z, y))


def test_trades_loss_by_hand() -> None:
    model, (x, y, x_adv) = _model(), _batch()
    cfg = RunConfig(method="trades", trades_beta=6.0)
    ctx = FixedAttack(cfg, 1, x_adv=x_adv)
    logits_nat, logits_adv, p_eval = _reference(model, x, x_adv)
    step = trades(model, x, y, IDX, ctx)
    p_nat = _probs(logits_nat)
    expected = _ce(logits_nat, y) + 6.0 * _kl_per_example(p_nat, logits_adv).sum() / B
    _close(step.loss.item(), expected)
    assert 6.0 * _kl_per_example(p_nat, logits_adv).sum() / B > 1e-3  # the KL term is not negligible
    _close(step.logits.detach(), logits_adv)
    # the attack maximizes KL(p(x) || p(x')) with p(x) from the eval-mode model, from a N(0, 0.001) start
    (call,) = ctx.calls
    assert call["start"] == "normal"
    z = _random_logits()
    _close(call["objective"](z), _kl_per_example(p_eval, z))
    assert not torch.allclose(p_eval, p_nat.detach(), atol=1e-3)  # train and eval mode do differ here


@pytest.mark.parametrize("epoch", [1, 2, 3, 5, 9])
def test_mix_loss_by_hand(epoch: int) -> None:
    model, (x, y, x_adv) = _model(), _batch()
    ctx = FixedAttack(RunConfig(method="mix", gamma_ramp_epochs=4), epoch, x_adv=x_adv)
    logits_nat, logits_adv, _ = _reference(model, x, x_adv)
    gamma = min(1.0, (epoch - 1) / 4)
    assert ctx.gamma() == pytest.approx(gamma)
    step = mix(model, x, y, IDX, ctx)
    _close(step.loss.item(), (1 - gamma) * _ce(logits_nat, y) + gamma * _ce(logits_adv, y))
    _close(step.logits.detach(), logits_adv)
    z = _random_logits()
    _close(ctx.calls[0]["objective"](z), _ce_per_example(z, y))


# --- temporal ensembling ----------------------------------------------------------------------------

TE_CFG = dict(te_start=2, te_end=6, te_weight=30.0, te_momentum=0.9)


def _te_reference(model, x, x_adv, soft, cfg, epoch):
    logits_nat, logits_adv, p_eval = _reference(model, x, x_adv)
    eta = cfg.te_momentum
    p_new = eta * soft[IDX].double() + (1 - eta) * p_eval
    target = p_new / p_new.sum(1, keepdim=True)
    return logits_nat, logits_adv, p_eval, p_new, target, _weight(cfg, epoch)


def _check_soft_label_update(ctx, soft_before, p_new) -> None:
    rows = torch.zeros(N, dtype=torch.bool)
    rows[IDX] = True
    assert torch.equal(ctx.soft_labels[~rows], soft_before[~rows])  # untouched outside the batch
    _close(ctx.soft_labels[IDX], p_new, tol=1e-6)


@pytest.mark.parametrize("epoch", [2, 4, 6, 8])
def test_pgd_at_te_by_hand(epoch: int) -> None:
    model, (x, y, x_adv) = _model(), _batch()
    cfg = RunConfig(method="pgd_at_te", **TE_CFG)
    soft = _soft_labels()
    ctx = FixedAttack(cfg, epoch, soft_labels=soft.clone(), x_adv=x_adv)
    _, logits_adv, _, p_new, target, w = _te_reference(model, x, x_adv, soft, cfg, epoch)
    assert ctx.te_weight() == pytest.approx(w) and w > 0
    step = pgd_at_te(model, x, y, IDX, ctx)
    te = w * _te_per_example(logits_adv, target).mean()
    assert te.item() > 1e-3  # the TE term is not negligible
    _close(step.loss.item(), _ce(logits_adv, y) + te)
    _close(step.logits.detach(), logits_adv)
    _check_soft_label_update(ctx, soft, p_new)
    # the attack maximizes CE + w * TE term, per example, with the config's default start
    (call,) = ctx.calls
    assert call["start"] is None
    z = _random_logits()
    _close(call["objective"](z), _ce_per_example(z, y) + w * _te_per_example(z, target))


@pytest.mark.parametrize("epoch", [2, 4, 6, 8])
def test_trades_te_by_hand(epoch: int) -> None:
    model, (x, y, x_adv) = _model(), _batch()
    cfg = RunConfig(method="trades_te", trades_beta=6.0, **TE_CFG)
    soft = _soft_labels()
    ctx = FixedAttack(cfg, epoch, soft_labels=soft.clone(), x_adv=x_adv)
    logits_nat, logits_adv, p_eval, p_new, target, w = _te_reference(model, x, x_adv, soft, cfg, epoch)
    step = trades_te(model, x, y, IDX, ctx)
    p_nat = _probs(logits_nat)
    te = w * _te_per_example(logits_nat, target).mean()  # on the clean input for TRADES
    assert te.item() > 1e-3
    expected = _ce(logits_nat, y) + 6.0 * _kl_per_example(p_nat, logits_adv).sum() / B + te
    _close(step.loss.item(), expected)
    _close(step.logits.detach(), logits_adv)
    _check_soft_label_update(ctx, soft, p_new)
    (call,) = ctx.calls
    assert call["start"] == "normal"
    z = _random_logits()
    _close(call["objective"](z), 6.0 * _kl_per_example(p_eval, z) + w * _te_per_example(z, target))


def test_te_soft_labels_from_zero_are_normalized_clean_predictions() -> None:
    """At the first visit (p_i = 0) the target is exactly the eval-mode clean prediction."""
    model, (x, y, x_adv) = _model(), _batch()
    cfg = RunConfig(method="pgd_at_te", **TE_CFG)
    ctx = FixedAttack(cfg, 3, soft_labels=torch.zeros(N, C), x_adv=x_adv)
    _, logits_adv, p_eval = _reference(model, x, x_adv)
    step = pgd_at_te(model, x, y, IDX, ctx)
    _close(ctx.soft_labels[IDX], 0.1 * p_eval, tol=1e-6)
    w = _weight(cfg, 3)
    _close(step.loss.item(), _ce(logits_adv, y) + w * _te_per_example(logits_adv, p_eval).mean())


def test_te_weight_schedule() -> None:
    cfg = RunConfig(method="pgd_at_te", te_start=3, te_end=7, te_weight=10.0)
    w = {e: Context(cfg, e).te_weight() for e in range(1, 12)}
    assert w[1] == 0.0 and w[2] == 0.0
    assert w[3] == pytest.approx(10.0 * math.exp(-5))
    assert w[5] == pytest.approx(10.0 * math.exp(-5 * 0.25))
    for e in (7, 8, 11):
        assert w[e] == 10.0
    assert all(w[e] < w[e + 1] for e in range(2, 7))  # strictly increasing through the ramp
    for e in range(3, 7):
        t = (e - 3) / 4
        assert w[e] == pytest.approx(10.0 * math.exp(-5 * (1 - t) ** 2))
    # a ramp of zero length switches on at full weight
    cfg = RunConfig(method="pgd_at_te", te_start=4, te_end=4, te_weight=10.0)
    assert Context(cfg, 3).te_weight() == 0.0 and Context(cfg, 4).te_weight() == 10.0
    # the paper's defaults (code: 300, epochs 90 -> 150)
    cfg = RunConfig(method="pgd_at_te")
    assert Context(cfg, 89).te_weight() == 0.0 and Context(cfg, 150).te_weight() == 300.0
    assert Context(cfg, 120).te_weight() == pytest.approx(300.0 * math.exp(-1.25))


def test_gamma_schedule() -> None:
    cfg = RunConfig(method="mix", gamma_ramp_epochs=50)
    assert Context(cfg, 1).gamma() == 0.0
    assert Context(cfg, 26).gamma() == pytest.approx(0.5)
    assert Context(cfg, 51).gamma() == 1.0 and Context(cfg, 200).gamma() == 1.0


@pytest.mark.parametrize(("te_method", "plain"), [(pgd_at_te, pgd_at), (trades_te, trades)])
def test_te_methods_equal_plain_methods_before_te_start(te_method, plain) -> None:
    cfg = RunConfig(method="pgd_at_te", te_start=3, te_end=5, steps=3)
    x, y, _ = _batch()
    model = _model()
    soft = _soft_labels()
    losses = []
    for fn in (te_method, plain):
        m = copy.deepcopy(model)  # train-mode forwards move BN statistics, which the next attack uses
        ctx = Context(cfg, 2, soft_labels=soft.clone())
        torch.manual_seed(0)
        step = fn(m, x, y, IDX, ctx)
        losses.append(step.loss)
        assert torch.equal(ctx.soft_labels, soft)  # no soft-label update before te_start
    assert torch.equal(losses[0], losses[1])
    # and from te_start on they do differ
    ctx = Context(cfg, 3, soft_labels=soft.clone())
    torch.manual_seed(0)
    assert not torch.equal(te_method(copy.deepcopy(model), x, y, IDX, ctx).loss, losses[1])


def _hand_loss(name: str, ref: nn.Module, x, y, x_adv, soft, cfg: RunConfig, epoch: int) -> torch.Tensor:
    """The loss of each method from the reference formulas, differentiable in the parameters of ``ref``."""
    with torch.no_grad():
        p_eval = _probs(copy.deepcopy(ref).eval()(x))
    logits_nat, logits_adv = ref(x), ref(x_adv)
    beta, w = cfg.trades_beta, _weight(cfg, epoch)
    p_new = cfg.te_momentum * soft[IDX].double() + (1 - cfg.te_momentum) * p_eval
    target = p_new / p_new.sum(1, keepdim=True)
    kl = _kl_per_example(_probs(logits_nat), logits_adv).sum() / B  # p(x) is differentiated too
    if name == "pgd_at":
        return _ce(logits_adv, y)
    if name == "mix":
        gamma = min(1.0, (epoch - 1) / cfg.gamma_ramp_epochs)
        return (1 - gamma) * _ce(logits_nat, y) + gamma * _ce(logits_adv, y)
    if name == "trades":
        return _ce(logits_nat, y) + beta * kl
    if name == "pgd_at_te":
        return _ce(logits_adv, y) + w * _te_per_example(logits_adv, target).mean()
    assert name == "trades_te"
    return _ce(logits_nat, y) + beta * kl + w * _te_per_example(logits_nat, target).mean()


@pytest.mark.parametrize("name", ["pgd_at", "mix", "trades", "pgd_at_te", "trades_te"])
def test_parameter_gradients_match_the_hand_computed_loss(name: str) -> None:
    """Which terms are differentiated: both p(x) and p(x') in the TRADES KL; not the TE targets."""
    model, (x, y, x_adv) = _model(), _batch()
    cfg = RunConfig(method=name, gamma_ramp_epochs=4, **TE_CFG)
    soft, epoch = _soft_labels(), 4
    ref = copy.deepcopy(model)
    ctx = FixedAttack(cfg, epoch, soft_labels=soft.clone(), x_adv=x_adv)
    METHODS[name](model, x, y, IDX, ctx).loss.backward()
    _hand_loss(name, ref, x, y, x_adv, soft, cfg, epoch).backward()
    for (pname, p), q in zip(model.named_parameters(), ref.parameters()):
        assert torch.allclose(p.grad.double(), q.grad.double(), rtol=1e-4, atol=1e-6), f"{name}: {pname}"


# --- label smoothing ------------------------------------------------------------------------------

@pytest.mark.parametrize("s", [0.0, 0.1, 0.3])
def test_label_smoothing_by_hand(s: float) -> None:
    model, (x, y, x_adv) = _model(), _batch()
    cfg = RunConfig(method="pgd_at", label_smoothing=s)
    logits_nat, logits_adv, _ = _reference(model, x, x_adv)
    ctx = FixedAttack(cfg, 1, x_adv=x_adv)
    _close(ctx.ce(logits_nat, y), _ce(logits_nat, y, s))
    _close(pgd_at(model, x, y, IDX, ctx).loss.item(), _ce(logits_adv, y, s))
    _close(standard(model, x, y, IDX, ctx).loss.item(), _ce(logits_nat, y, s))
    if s > 0:  # smoothing does change the value
        assert abs(_ce(logits_adv, y, s) - _ce(logits_adv, y)) > 1e-4
    # and only the CE: the attack still maximizes the plain CE
    z = _random_logits()
    _close(ctx.calls[0]["objective"](z), _ce_per_example(z, y))


# --- every method -----------------------------------------------------------------------------------

def test_method_registry_matches_config() -> None:
    assert set(METHODS) == set(memlib.config.METHODS)
    assert len(METHODS) == len(memlib.config.METHODS)
    assert all(callable(fn) for fn in METHODS.values())


@pytest.mark.parametrize("epoch", [1, 2])
@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_gives_a_finite_scalar_with_gradients(name: str, epoch: int) -> None:
    teacher = {"kd_teacher": "teacher-run/best.pt"} if name == "kd_swa" else {}
    cfg = RunConfig(method=name, steps=2, te_start=2, te_end=3, gamma_ramp_epochs=2, coteach_gradual=1, **teacher)
    model, (x, y, _) = _model(), _batch()
    ctx = Context(cfg, epoch, soft_labels=torch.zeros(N, C), teachers={"kd_teacher": _model(5).eval()}, peer=_model(6))
    torch.manual_seed(0)
    step = METHODS[name](model, x, y, IDX, ctx)
    assert step.loss.dim() == 0 and torch.isfinite(step.loss)
    assert step.logits.shape == (B, C)
    assert model.training
    assert all(p.grad is None for p in model.parameters())  # the attack left no parameter gradients
    step.loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"{name}: bad gradient for {pname}"
    updated = ctx.soft_labels.abs().sum(1) > 0
    if name.endswith("_te") and epoch >= 2:
        assert updated[IDX].all() and updated.sum() == B
    else:
        assert not updated.any()


def test_context_attack_follows_the_config() -> None:
    model, (x, y, _) = _model(), _batch()
    obj = lambda z: F.cross_entropy(z, y, reduction="none")  # noqa: E731
    cfg = RunConfig(train_attack="fgsm", alpha=10 / 255)
    torch.manual_seed(1)
    a = Context(cfg, 1).attack(model, x, obj)
    torch.manual_seed(1)
    assert torch.equal(a, fgsm(model, x, obj, eps=cfg.eps, alpha=cfg.alpha))
    cfg = RunConfig(steps=3, eps=4 / 255, alpha=1 / 255)
    torch.manual_seed(1)
    a = Context(cfg, 1).attack(model, x, obj)
    torch.manual_seed(1)
    assert torch.equal(a, pgd(model, x, obj, eps=4 / 255, alpha=1 / 255, steps=3, start="uniform"))
    assert (a - x).abs().max().item() <= 4 / 255 + 1e-6
    cfg = RunConfig(steps=2, norm="l2", eps=0.5, alpha=0.1)
    torch.manual_seed(1)
    a = Context(cfg, 1).attack(model, x, obj)
    torch.manual_seed(1)
    assert torch.equal(a, pgd(model, x, obj, eps=0.5, alpha=0.1, steps=2, norm="l2", start="normal"))
    assert model.training


def test_one_sgd_step_reduces_the_pgd_at_loss() -> None:
    model, (x, y, _) = _model(), _batch()
    ctx = Context(RunConfig(method="pgd_at", steps=5), 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    torch.manual_seed(0)
    before = pgd_at(model, x, y, IDX, ctx).loss
    opt.zero_grad()
    before.backward()
    opt.step()
    torch.manual_seed(0)
    after = pgd_at(model, x, y, IDX, ctx).loss
    assert after.item() < before.item() - 1e-3, (before.item(), after.item())
    # a step the other way (gradient ascent) increases it: the sign is what matters
    model2, opt2 = _model(), None
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.05, maximize=True)
    torch.manual_seed(0)
    before2 = pgd_at(model2, x, y, IDX, ctx).loss
    opt2.zero_grad()
    before2.backward()
    opt2.step()
    torch.manual_seed(0)
    assert pgd_at(model2, x, y, IDX, ctx).loss.item() > before2.item() + 1e-3


# --- self-adaptive training (Huang et al. 2020) on PGD-AT -------------------------------------------

from memlib.config import ConfigError  # noqa: E402
from memlib.methods import pgd_at_sat  # noqa: E402

SAT_CFG = dict(method="pgd_at_sat", sat_start=3, sat_momentum=0.8)


def _sat_table(seed: int = 1) -> torch.Tensor:
    """A target table mid-training: rows are distributions with varied maxima, except some rows not yet
    visited (all zeros), two of them in the batch (ids 0 and 19)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.softmax(2 * torch.randn(N, C, generator=g), 1)
    t[[0, 19, 1, 2]] = 0
    return t


def _sat_reference(model, x, y, x_adv, table, alpha):
    """Train-mode p(x) (batch statistics, from a copy), the new targets (zero rows -> one-hot(y) first),
    the weights w_i = max_c t_ic, the adversarial logits and the hand loss, in float64."""
    with torch.no_grad():
        p_train = _probs(copy.deepcopy(model).train()(x))
    t_old = table[IDX].double().clone()
    for i in range(B):
        if (t_old[i] == 0).all():
            t_old[i] = 0
            t_old[i, y[i]] = 1
    t_new = alpha * t_old + (1 - alpha) * p_train
    w = t_new.max(1).values
    ref = copy.deepcopy(model)
    logits_adv = ref(x_adv)
    loss = -(w * (t_new * torch.log(_probs(logits_adv))).sum(1)).sum() / w.sum()
    return p_train, t_old, t_new, w, logits_adv, loss, ref


def test_pgd_at_sat_is_pgd_at_before_sat_start() -> None:
    x, y, x_adv = _batch()
    cfg = RunConfig(steps=3, **SAT_CFG)
    model, table = _model(), _sat_table()
    for epoch in (1, 2):
        # injected attack: the hand-computed PGD-AT loss, the table untouched
        ctx = FixedAttack(cfg, epoch, soft_labels=table.clone(), x_adv=x_adv)
        _, logits_adv, _ = _reference(model, x, x_adv)
        _close(pgd_at_sat(copy.deepcopy(model), x, y, IDX, ctx).loss.item(), _ce(logits_adv, y))
        assert torch.equal(ctx.soft_labels, table)
        # real attack: bit-identical to pgd_at, BN statistics included
        outs = []
        for fn in (pgd_at_sat, pgd_at):
            m = copy.deepcopy(model)
            ctx = Context(cfg, epoch, soft_labels=table.clone())
            torch.manual_seed(0)
            outs.append((fn(m, x, y, IDX, ctx).loss, list(m.buffers())))
            assert torch.equal(ctx.soft_labels, table)
        assert torch.equal(outs[0][0], outs[1][0])
        assert all(torch.equal(a, b) for a, b in zip(outs[0][1], outs[1][1]))
    # from sat_start on they differ
    ctx = Context(cfg, 3, soft_labels=table.clone())
    torch.manual_seed(0)
    assert not torch.equal(pgd_at_sat(copy.deepcopy(model), x, y, IDX, ctx).loss, outs[1][0])


@pytest.mark.parametrize("epoch", [3, 5])
def test_pgd_at_sat_by_hand(epoch: int) -> None:
    model, (x, y, x_adv) = _model(), _batch()
    cfg = RunConfig(**SAT_CFG)
    table = _sat_table()
    ctx = FixedAttack(cfg, epoch, soft_labels=table.clone(), x_adv=x_adv)
    p_train, t_old, t_new, w, logits_adv, loss, _ = _sat_reference(model, x, y, x_adv, table, 0.8)
    step = pgd_at_sat(model, x, y, IDX, ctx)
    # the targets moved by exactly the momentum, from one-hot(y) for rows never visited
    _close(ctx.soft_labels[IDX], 0.8 * t_old + 0.2 * p_train, tol=1e-6)
    _close(ctx.soft_labels[[0, 19]], t_new[[2, 4]], tol=1e-6)  # ids 0 and 19 are batch positions 2 and 4
    assert (t_new[[2, 4]].argmax(1) == y[[2, 4]]).all() and (t_new[[2, 4]].max(1).values > 0.8).all()
    _close(ctx.soft_labels[IDX].sum(1), torch.ones(B), tol=1e-6)  # still distributions
    rows = torch.zeros(N, dtype=torch.bool)
    rows[IDX] = True
    assert torch.equal(ctx.soft_labels[~rows], table[~rows])  # only the batch's rows change (zeros stay zeros)
    # the loss: soft CE on x' weighted by w_i = max_c t_ic, normalized by sum_i w_i
    _close(step.loss.item(), loss)
    _close(step.logits.detach(), logits_adv)
    assert model.training
    unweighted = -(t_new * torch.log(_probs(logits_adv))).sum(1).mean()
    assert abs(loss.item() - unweighted.item()) > 1e-3  # the weights matter here
    assert abs(loss.item() - _ce(logits_adv, y).item()) > 1e-2  # and so do the soft targets
    # the prediction is p(x) in train mode: eval mode or the adversarial input would move the targets by
    # (1 - alpha) * these differences, far beyond the 1e-6 tolerance above
    with torch.no_grad():
        p_eval = _probs(copy.deepcopy(model).eval()(x))
        p_adv = _probs(copy.deepcopy(model).train()(x_adv))
    assert (p_eval - p_train).abs().max() > 1e-2 and (p_adv - p_train).abs().max() > 1e-3
    # the attack is PGD-AT's: CE with the labels, the config's default start
    (call,) = ctx.calls
    assert call["start"] is None
    z = _random_logits()
    _close(call["objective"](z), _ce_per_example(z, y))


def test_pgd_at_sat_targets_follow_the_momentum_over_visits() -> None:
    """From zeros: t1 = a one-hot(y) + (1 - a) p1, then t2 = a t1 + (1 - a) p2 (p2 from the changed model)."""
    model, (x, y, x_adv) = _model(), _batch()
    cfg = RunConfig(**SAT_CFG)
    ctx = FixedAttack(cfg, 3, soft_labels=torch.zeros(N, C), x_adv=x_adv)
    onehot = F.one_hot(y, C).double()
    with torch.no_grad():
        p1 = _probs(copy.deepcopy(model).train()(x))
    pgd_at_sat(model, x, y, IDX, ctx)
    t1 = 0.8 * onehot + 0.2 * p1
    _close(ctx.soft_labels[IDX], t1, tol=1e-6)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        p2 = _probs(copy.deepcopy(model).train()(x))
    pgd_at_sat(model, x, y, IDX, ctx)
    _close(ctx.soft_labels[IDX], 0.8 * t1 + 0.2 * p2, tol=1e-6)
    assert (ctx.soft_labels.abs().sum(1) > 0).sum() == B


def test_pgd_at_sat_leaves_batchnorm_statistics_as_pgd_at() -> None:
    """The extra train-mode forward on x does not move the running statistics (only the loss forward on x')."""
    model, (x, y, x_adv) = _model(), _batch()
    ref = copy.deepcopy(model)
    pgd_at_sat(model, x, y, IDX, FixedAttack(RunConfig(**SAT_CFG), 4, soft_labels=torch.zeros(N, C), x_adv=x_adv))
    pgd_at(ref, x, y, IDX, FixedAttack(RunConfig(method="pgd_at"), 4, x_adv=x_adv))
    for (name, a), b in zip(model.named_buffers(), ref.buffers()):
        assert torch.equal(a, b), name


def test_pgd_at_sat_parameter_gradients_match_the_hand_loss() -> None:
    """Targets and weights are constants: only log p(x') is differentiated."""
    model, (x, y, x_adv) = _model(), _batch()
    table = _sat_table()
    ctx = FixedAttack(RunConfig(**SAT_CFG), 4, soft_labels=table.clone(), x_adv=x_adv)
    *_, loss, ref = _sat_reference(model, x, y, x_adv, table, 0.8)
    pgd_at_sat(model, x, y, IDX, ctx).loss.backward()
    loss.backward()
    for (pname, p), q in zip(model.named_parameters(), ref.parameters()):
        assert torch.allclose(p.grad.double(), q.grad.double(), rtol=1e-4, atol=1e-6), pname


@pytest.mark.parametrize("epoch", [2, 3])
def test_pgd_at_sat_gives_a_finite_scalar_with_gradients(epoch: int) -> None:
    cfg = RunConfig(method="pgd_at_sat", steps=2, sat_start=3)
    model, (x, y, _) = _model(), _batch()
    ctx = Context(cfg, epoch, soft_labels=torch.zeros(N, C))
    torch.manual_seed(0)
    step = pgd_at_sat(model, x, y, IDX, ctx)
    assert step.loss.dim() == 0 and torch.isfinite(step.loss)
    assert step.logits.shape == (B, C) and model.training
    assert all(p.grad is None for p in model.parameters())
    step.loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname
    updated = ctx.soft_labels.abs().sum(1) > 0
    if epoch >= 3:
        assert updated[IDX].all() and updated.sum() == B
    else:
        assert not updated.any()


def test_sat_config_keys() -> None:
    cfg = RunConfig()
    assert (cfg.sat_start, cfg.sat_momentum) == (70, 0.9)  # SAT authors' TRADES+SAT script
    assert "pgd_at_sat" in memlib.config.METHODS and METHODS["pgd_at_sat"] is pgd_at_sat
    assert RunConfig(method="pgd_at_sat", sat_start=1, sat_momentum=0.0).sat_momentum == 0.0
    assert RunConfig().run_id("x") == RunConfig(sat_start=70, sat_momentum=0.9).run_id("x")  # defaults: no new ids
    for values, needle in [({"sat_start": 0}, "sat_start must be >= 1; got 0"),
                           ({"sat_start": -5}, "sat_start must be >= 1"),
                           ({"sat_momentum": 1.0}, "sat_momentum must be in [0, 1); got 1.0"),
                           ({"sat_momentum": -0.1}, "sat_momentum must be in [0, 1)"),
                           ({"sat_momentum": float("nan")}, "sat_momentum must be in [0, 1)"),
                           ({"sat_momentum": "0.9x"}, "config key 'sat_momentum' expects float"),
                           ({"sat_strat": 5}, "did you mean 'sat_start'?")]:
        with pytest.raises(ConfigError) as info:
            RunConfig.from_dict(values)
        msg = str(info.value)
        assert needle in msg and "\n" not in msg, msg


# --- KD-SWA (Chen et al. 2021): distillation from frozen teachers on the adversarial input -------------------

from memlib.methods import coteaching, kd_swa, kd_term, small_loss_ids  # noqa: E402

KD_CFG = dict(method="kd_swa", kd_teacher="teacher-run/best.pt", kd_temperature=2.0, kd_weight=0.6,
              kd_std_weight=0.1)


def _soft_ce(student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float) -> torch.Tensor:
    """float64 T^2 * mean_i sum_c -softmax(teacher/T)_c log softmax(student/T)_c."""
    target = _probs(teacher_logits / t)
    return -(target * torch.log(_probs(student_logits / t))).sum(1).mean() * t ** 2


@pytest.mark.parametrize("with_std", [False, True])
def test_kd_swa_by_hand(with_std: bool) -> None:
    model, (x, y, x_adv) = _model(), _batch()
    robust, standard = _model(5).eval(), _model(6).eval()
    extra = {"kd_std_teacher": "std-run/final.pt"} if with_std else {}
    cfg = RunConfig(**KD_CFG, **extra)
    ctx = FixedAttack(cfg, 1, x_adv=x_adv)
    ctx.teachers = {"kd_teacher": robust, "kd_std_teacher": standard if with_std else None}
    ref = copy.deepcopy(model)
    step = kd_swa(model, x, y, IDX, ctx)
    logits_adv = ref(x_adv)  # train mode, as the method's forward
    with torch.no_grad():
        t_rob, t_std = robust(x_adv), standard(x_adv)
    if with_std:  # Chen et al.'s weights: 0.3 CE + 0.6 KD(robust) + 0.1 KD(standard)
        hand = (0.3 * _ce(logits_adv, y) + 0.6 * _soft_ce(logits_adv, t_rob, 2.0)
                + 0.1 * _soft_ce(logits_adv, t_std, 2.0))
    else:  # without the standard teacher the CE gets its share: 0.4 CE + 0.6 KD(robust)
        hand = 0.4 * _ce(logits_adv, y) + 0.6 * _soft_ce(logits_adv, t_rob, 2.0)
    _close(step.loss.item(), hand.item())
    _close(step.logits.detach(), logits_adv.detach())
    # the attack is PGD-AT's: CE with the labels
    (call,) = ctx.calls
    z = _random_logits()
    _close(call["objective"](z), _ce_per_example(z, y))
    # gradients: the student's match the hand loss; the frozen teachers get none and stay in eval mode
    step.loss.backward()
    hand.backward()
    for (pname, p), q in zip(model.named_parameters(), ref.parameters()):
        assert torch.allclose(p.grad.double(), q.grad.double(), rtol=1e-4, atol=1e-6), pname
    assert all(p.grad is None for t in (robust, standard) for p in t.parameters())
    assert not robust.training and not standard.training


def test_kd_term_is_the_kl_plus_the_teacher_entropy() -> None:
    s, t = _random_logits(1), _random_logits(2)
    for temp in (1.0, 2.0, 4.0):
        p = _probs(t / temp)
        kl = _kl_per_example(p, s / temp).mean() * temp ** 2
        entropy = -(p * torch.log(p)).sum(1).mean() * temp ** 2
        _close(kd_term(s, t, temp), kl + entropy)
    # distilling from oneself at T = 1: the minimum over students is the teacher's entropy
    assert kd_term(t, t, 1.0) < kd_term(s, t, 1.0)


# --- Co-teaching (Han et al. 2018) adapted to PGD-AT ------------------------------------------------------

def test_small_loss_selection_keeps_exactly_the_smallest_fraction() -> None:
    losses = torch.tensor([0.9, 0.1, 2.5, 0.4, 0.05, 1.7, 0.3, 3.0])
    for rate, kept in [(0.0, 8), (0.25, 6), (0.5, 4), (0.75, 2), (0.95, 1)]:
        ids = small_loss_ids(losses, rate)
        assert len(ids) == kept, rate
        assert set(ids.tolist()) == set(torch.sort(losses).indices[:kept].tolist()), rate
    assert small_loss_ids(losses, 0.5).tolist() == [4, 1, 6, 3]  # smallest first


def test_forget_rate_schedule() -> None:
    cfg = RunConfig(method="coteaching", coteach_forget_rate=0.3, coteach_gradual=3)
    rates = [Context(cfg, e).forget_rate() for e in range(1, 7)]
    _close(rates, [0.0, 0.1, 0.2, 0.3, 0.3, 0.3])
    assert RunConfig().coteach_forget_rate == 0.2 and RunConfig().coteach_gradual == 10  # Han et al.'s defaults


@pytest.mark.parametrize("epoch", [1, 3])
def test_coteaching_by_hand(epoch: int) -> None:
    """Each network is trained on the small-loss half chosen by the other (forget rate 0.5 from epoch 2 on)."""
    model, peer, (x, y, x_adv) = _model(), _model(7), _batch()
    cfg = RunConfig(method="coteaching", coteach_forget_rate=0.5, coteach_gradual=1)
    ctx = FixedAttack(cfg, epoch, x_adv=x_adv)
    ctx.peer = peer
    ref_model, ref_peer = copy.deepcopy(model), copy.deepcopy(peer)
    step = coteaching(model, x, y, IDX, ctx)
    l_model, l_peer = _ce_per_example(ref_model(x_adv), y), _ce_per_example(ref_peer(x_adv), y)
    keep = B if epoch == 1 else B // 2
    by_model = torch.argsort(l_model.detach())[:keep]
    by_peer = torch.argsort(l_peer.detach())[:keep]
    if epoch > 1:
        assert set(by_model.tolist()) != set(by_peer.tolist())  # the two networks disagree on this batch
    hand = l_model[by_peer].mean() + l_peer[by_model].mean()
    _close(step.loss.item(), hand.item())
    _close(step.logits.detach(), ref_model(x_adv).detach())  # the first model's logits
    assert len(ctx.calls) == 2  # each network attacks for itself, with PGD-AT's objective
    z = _random_logits()
    for call in ctx.calls:
        _close(call["objective"](z), _ce_per_example(z, y))
    step.loss.backward()
    hand.backward()
    for net, ref in ((model, ref_model), (peer, ref_peer)):
        for (pname, p), q in zip(net.named_parameters(), ref.parameters()):
            assert torch.allclose(p.grad.double(), q.grad.double(), rtol=1e-4, atol=1e-6), pname


def test_coteaching_joint_sgd_step_equals_two_separate_steps() -> None:
    """One SGD (momentum, weight decay) over both networks on the summed loss = each network's own step."""
    from memlib.train import make_optimizer
    (x, y, x_adv), cfg = _batch(), RunConfig(method="coteaching", coteach_forget_rate=0.5, coteach_gradual=1, lr=0.05)
    model, peer = _model(), _model(7)
    sep_model, sep_peer = copy.deepcopy(model), copy.deepcopy(peer)
    joint = make_optimizer(cfg, model, peer)
    opts = [make_optimizer(cfg, sep_model), make_optimizer(cfg, sep_peer)]
    assert len(joint.param_groups[0]["params"]) == 2 * len(list(model.parameters()))
    for _ in range(3):
        ctx = FixedAttack(cfg, 2, x_adv=x_adv)
        ctx.peer = peer
        joint.zero_grad()
        coteaching(model, x, y, IDX, ctx).loss.backward()
        joint.step()
        with torch.no_grad():  # the separate steps: each loss on the other network's picks
            picks_m = small_loss_ids(F.cross_entropy(copy.deepcopy(sep_model)(x_adv), y, reduction="none"), 0.5)
            picks_p = small_loss_ids(F.cross_entropy(copy.deepcopy(sep_peer)(x_adv), y, reduction="none"), 0.5)
        for net, picks, opt in ((sep_model, picks_p, opts[0]), (sep_peer, picks_m, opts[1])):
            opt.zero_grad()
            F.cross_entropy(net(x_adv), y, reduction="none")[picks].mean().backward()
            opt.step()
    for a, b in ((model, sep_model), (peer, sep_peer)):
        for (pname, p), q in zip(a.named_parameters(), b.parameters()):
            assert torch.allclose(p, q, rtol=1e-5, atol=1e-6), pname
    assert any(not torch.allclose(p, q) for p, q in zip(model.parameters(), _model().parameters()))  # it did train


# --- the registry: what each method declares; a new method = one function + one registration ---------------

import dataclasses  # noqa: E402

from memlib.methods import Step, method, method_spec, unregister  # noqa: E402

BUILTIN = ["standard", "pgd_at", "trades", "mix", "pgd_at_te", "trades_te", "pgd_at_sat", "kd_swa", "coteaching"]


def test_registrations_declare_what_each_method_needs() -> None:
    assert list(memlib.config.METHODS) == list(METHODS) == BUILTIN  # the order the unknown-method error lists
    spec = {name: method_spec(name) for name in BUILTIN}
    assert all(memlib.config.METHODS[n] is spec[n] and spec[n].loss is METHODS[n] for n in BUILTIN)
    assert [n for n in BUILTIN if spec[n].peer] == ["coteaching"]
    assert [n for n in BUILTIN if spec[n].averaging] == ["kd_swa"]
    assert {n: spec[n].teachers for n in BUILTIN if spec[n].teachers} == {"kd_swa": ("kd_teacher", "kd_std_teacher")}
    assert [n for n in BUILTIN if spec[n].soft_labels] == ["pgd_at_te", "trades_te", "pgd_at_sat"]
    cfg = RunConfig(te_start=2, te_end=4, gamma_ramp_epochs=4, coteach_gradual=2)
    logged = {n: spec[n].epoch_metrics(Context(cfg, 3)) for n in BUILTIN if spec[n].epoch_metrics is not None}
    te = {"te_weight": pytest.approx(300.0 * math.exp(-1.25))}
    assert logged == {"mix": {"gamma": 0.5}, "pgd_at_te": te, "trades_te": te, "coteaching": {"forget_rate": 0.2}}


def test_every_method_setting_belongs_to_its_methods() -> None:
    owned = {key for name in BUILTIN for key in method_spec(name).settings}
    prefixed = {f.name for f in dataclasses.fields(RunConfig) if f.name.startswith(("te_", "sat_", "kd_", "coteach_",
                                                                                       "swa_"))}
    assert owned == prefixed | {"trades_beta", "gamma_ramp_epochs"}
    assert RunConfig().method_settings() == {}
    assert RunConfig(method="trades_te", te_start=3).method_settings() == {
        "trades_beta": 6.0, "te_momentum": 0.9, "te_weight": 300.0, "te_start": 3, "te_end": 150}
    assert RunConfig(method="coteaching").method_settings() == {"coteach_forget_rate": 0.2, "coteach_gradual": 10}


@pytest.mark.parametrize("values, needle", [
    ({"trades_beta": -1}, "trades_beta must be >= 0; got -1.0"),
    ({"trades_beta": float("inf")}, "trades_beta must be finite; got inf"),
    ({"te_weight": -1}, "te_weight must be >= 0; got -1.0"),
    ({"te_weight": float("nan")}, "te_weight must be finite; got nan"),
    ({"te_momentum": 1.0}, "te_momentum must be in [0, 1); got 1.0"),
    ({"te_start": 0}, "te_start must be >= 1; got 0"),
    ({"gamma_ramp_epochs": 0}, "gamma_ramp_epochs must be >= 1; got 0"),
    ({"weight_decay": -1}, "weight_decay must be >= 0; got -1.0"),
    ({"momentum": 1.0}, "momentum must be in [0, 1); got 1.0"),
])
def test_method_settings_are_checked_whatever_the_method(values, needle) -> None:
    """A method's checks run for every config (its keys are in every config), with one-line errors."""
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict(values)
    assert needle in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_bad_registrations_are_refused_with_one_line() -> None:
    for kwargs, needle in [(dict(name="pgd_at"), "'pgd_at' is registered already"),
                           (dict(name="toy", settings=("toy_rate",)), "toy_rate are not RunConfig keys"),
                           (dict(name="toy", teachers=("init_from",)), "must be among its settings"),
                           (dict(name="toy", settings=("te_start",), teachers=("te_start",)), "WEIGHT_KEYS")]:
        with pytest.raises(ConfigError) as info:
            method(**kwargs)(pgd_at)
        assert needle in str(info.value) and "\n" not in str(info.value), str(info.value)
    assert list(METHODS) == list(memlib.config.METHODS) == BUILTIN and METHODS["pgd_at"] is pgd_at


def test_a_new_stateful_method_is_one_function_plus_one_registration(tiny_cfg, tmp_path) -> None:
    """A toy method, registered here: PGD-AT that counts in its per-example table how often each example was
    trained on, with its own check and an extra per-epoch metric. The loop sets up its table, logs its metric,
    saves and resumes its state, with no change anywhere else."""
    from memlib.io import load_checkpoint
    from memlib.runs import read_metrics
    from memlib.train import train

    def visits(model, x, y, idx, ctx: Context) -> Step:
        ctx.soft_labels[idx, 0] += 1
        return pgd_at(model, x, y, idx, ctx)

    def check(cfg: RunConfig) -> None:
        if cfg.method == "toy_visits" and cfg.label_smoothing > 0:
            raise ConfigError("method toy_visits takes no label_smoothing")

    method("toy_visits", check=check, soft_labels=True,
           epoch_metrics=lambda ctx: {"visits": ctx.soft_labels[:, 0].sum().item()})(visits)
    try:
        assert METHODS["toy_visits"] is visits and method_spec("toy_visits").soft_labels
        with pytest.raises(ConfigError, match="takes no label_smoothing"):
            tiny_cfg(method="toy_visits", label_smoothing=0.1)
        kw = dict(method="toy_visits", epochs=2, lr_milestones=[1])
        whole = train(tiny_cfg(**kw))
        assert [m["visits"] for m in whole.metrics] == [60, 120]  # 60 training examples, each once an epoch
        assert [m["visits"] for m in read_metrics(whole.run_dir)] == [60, 120]
        last = load_checkpoint(whole.run_dir / "last.pt")
        assert torch.equal(last["soft_labels"][:, 0], torch.full((60,), 2.0)) and not last["soft_labels"][:, 1:].any()
        assert "peer" not in last and "swa" not in last
        cfg = tiny_cfg(out_dir=str(tmp_path / "resumed"), **kw)  # stopped after epoch 1, then resumed
        train(cfg, until_epoch=1)
        resumed = train(cfg)
        untimed = [[{k: v for k, v in m.items() if not k.startswith("time")} for m in r.metrics]
                   for r in (whole, resumed)]
        assert untimed[0] == untimed[1]
    finally:
        unregister("toy_visits")
    assert list(METHODS) == list(memlib.config.METHODS) == BUILTIN
    with pytest.raises(ConfigError, match="unknown method 'toy_visits'"):
        RunConfig(method="toy_visits")
