"""Training objectives, one short function per method, built on ``memlib.attacks``.

Each method maps ``(model, x, y, idx, ctx)`` to a ``Step``: the scalar loss to minimize and the logits of
the inputs it trained on (for the running training accuracy). ``x`` is in [0, 1], ``y`` holds the labels
trained on (noisy when label noise is on), ``idx`` the example ids (for per-example state such as the
temporal-ensembling soft labels). The model is in train mode; attacks switch to eval mode themselves.

Each method is registered with ``@method(name, ...)``, which declares, next to its loss, what it needs:

* ``settings``: the RunConfig keys that are its own settings, and ``check``: the function(s) that validate
  them (``RunConfig.validate`` runs every registered method's checks, since the keys are in every config);
* ``peer=True``: a second network of the same architecture, trained in the same optimizer (``ctx.peer``);
* ``teachers``: RunConfig keys naming frozen models, other runs' checkpoints (``ctx.teachers[key]``);
* ``averaging=True``: stochastic weight averaging from ``swa_start`` on, the average being the model evaluated;
* ``soft_labels=True``: a per-example (N, C) table, zeros at the start, kept across epochs (``ctx.soft_labels``);
* ``epoch_metrics``: ``ctx -> dict`` of values logged with each epoch's metrics (a schedule's weight, say).

``memlib.train`` sets these up, saves and resumes them from the registration alone; it has no branch on a
method's name. Adding a method = one function + one registration (``@method``), here or anywhere before the
config naming it is made (a new setting is a new RunConfig key, with a default that keeps run identities).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from memlib.attacks import Objective, ce_objective, eval_mode, fgsm, kl_objective, pgd
from memlib.config import METHODS as REGISTERED
from memlib.config import WEIGHT_KEYS, ConfigError, MethodSettings, RunConfig


@dataclass
class Step:
    loss: torch.Tensor
    logits: torch.Tensor  # of the inputs trained on (adversarial for AT): the training batches' accuracy
    logits_nat: torch.Tensor | None = None  # of the clean (augmented) batch, where the loss computes them


@dataclass
class Context:
    """What a method may use besides the batch: the config, the epoch (1-based), and what its registration
    asked for (``memlib.train`` fills these in; None / empty when the method did not ask)."""

    cfg: RunConfig
    epoch: int
    soft_labels: torch.Tensor | None = None  # soft_labels=True: (N, C) per-example table, zeros at the start
    teachers: dict[str, nn.Module | None] = field(default_factory=dict)  # teachers=(keys): the frozen model (eval
    # mode, no gradients) of each key's checkpoint, None for an empty key
    peer: nn.Module | None = None  # peer=True: the second network, trained in the same optimizer

    def attack(self, model: nn.Module, x: torch.Tensor, objective: Objective, start: str | None = None):
        """The training attack of the config (PGD-k, or FGSM with random init)."""
        c = self.cfg
        if c.train_attack == "fgsm":
            return fgsm(model, x, objective, eps=c.eps, alpha=c.alpha, norm=c.norm, fold_bn=c.fold_bn,
                        clamp_start=c.clamp_start)
        return pgd(model, x, objective, eps=c.eps, alpha=c.alpha, steps=c.steps, norm=c.norm, start=start,
                   fold_bn=c.fold_bn, clamp_start=c.clamp_start)

    def ce(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean training cross-entropy, with the config's label smoothing (Pang et al. 2021 when > 0)."""
        return F.cross_entropy(logits.float(), y, label_smoothing=self.cfg.label_smoothing)

    def gamma(self) -> float:
        """Eq. 6 weight of the adversarial term: linear from 0 at epoch 1 to 1 after ``gamma_ramp_epochs``."""
        return min(1.0, (self.epoch - 1) / self.cfg.gamma_ramp_epochs)

    def te_weight(self) -> float:
        """Eq. 7 weight w(epoch) = te_weight * exp(-5 (1 - t)^2), t = (epoch - te_start) / (te_end - te_start);
        0 before ``te_start`` and the full weight from ``te_end`` on (the Gaussian ramp-up of Laine & Aila)."""
        c = self.cfg
        if self.epoch < c.te_start:
            return 0.0
        if self.epoch >= c.te_end:
            return c.te_weight
        t = (self.epoch - c.te_start) / (c.te_end - c.te_start)
        return c.te_weight * math.exp(-5.0 * (1.0 - t) ** 2)


    def forget_rate(self) -> float:
        """Co-teaching's schedule (Han et al. 2018, Sec. 3): R(T) = 1 - tau * min(T / T_k, 1) of each batch is kept,
        T = epochs completed before this one; so nothing is dropped in epoch 1 and tau from epoch T_k + 1 on.
        (Han et al.'s code ramps with np.linspace(0, tau, T_k), reaching tau one epoch earlier.)"""
        return self.cfg.coteach_forget_rate * min(1.0, (self.epoch - 1) / self.cfg.coteach_gradual)


Method = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, Context], Step]


# --- the registry -------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class MethodSpec(MethodSettings):
    """A method's registration: its loss and what the training loop sets up for it (module docstring).
    ``memlib.config.METHODS[name]`` is this object; ``METHODS[name]`` the loss the loop calls."""

    loss: Method
    peer: bool = False
    teachers: tuple[str, ...] = ()
    averaging: bool = False
    soft_labels: bool = False
    epoch_metrics: Callable[[Context], dict] | None = None
    # what one training example costs beyond the update (for memlib.plan): the training attack, and forwards
    # of its own loss terms (a teacher's forward is counted from ``teachers``)
    attacks: bool = True
    extra_forwards: int = 0


METHODS: dict[str, Method] = {}  # name -> loss, in registration order (the one the loop calls for the name)


def method(name: str, *, settings: Sequence[str] = (), check: Callable | Sequence[Callable] = (),
           peer: bool = False, teachers: Sequence[str] = (), averaging: bool = False, soft_labels: bool = False,
           epoch_metrics: Callable[[Context], dict] | None = None, attacks: bool = True,
           extra_forwards: int = 0) -> Callable[[Method], Method]:
    """Register the decorated loss as method ``name`` with what it needs (module docstring); returns the loss
    unchanged. ``teachers`` must be among ``settings`` and ``memlib.config.WEIGHT_KEYS`` (a run's identity keeps
    a checkpoint path as its run folder and file). ``unregister(name)`` takes it back."""
    checks = (check,) if callable(check) else tuple(check)
    bad = [key for key in teachers if key not in settings or key not in WEIGHT_KEYS]
    if bad:
        raise ConfigError(f"method {name!r}: teachers {', '.join(bad)} must be among its settings and "
                          f"memlib.config.WEIGHT_KEYS ({', '.join(WEIGHT_KEYS)})")

    def register(loss: Method) -> Method:
        REGISTERED.register(MethodSpec(name=name, settings=tuple(settings), checks=checks, loss=loss, peer=peer,
                                       teachers=tuple(teachers), averaging=averaging, soft_labels=soft_labels,
                                       epoch_metrics=epoch_metrics, attacks=attacks,
                                       extra_forwards=extra_forwards))
        METHODS[name] = loss
        return loss
    return register


def unregister(name: str) -> None:
    """Forget method ``name`` (a test's toy method, say)."""
    REGISTERED.unregister(name)
    METHODS.pop(name, None)


def method_spec(name: str) -> MethodSpec:
    """The registration of method ``name``."""
    return REGISTERED[name]


# --- helpers --------------------------------------------------------------------------------------

def trades_kl(logits_nat: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    """KL(p(x) || p(x')) summed over the batch and divided by the batch size (the TRADES reduction)."""
    return F.kl_div(F.log_softmax(logits_adv.float(), 1), F.softmax(logits_nat.float(), 1),
                    reduction="sum") / len(logits_nat)


def te_term(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-example mean over classes of (softmax(f(x)) - target)^2 (Eq. 7's squared distance / C)."""
    return (F.softmax(logits.float(), 1) - target).pow(2).mean(1)


def clean_probs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """p(x) of the eval-mode model, without gradient (the TRADES attack's reference; TE's update)."""
    with torch.no_grad(), eval_mode(model):
        return F.softmax(model(x).float(), 1)


def update_soft_labels(ctx: Context, idx: torch.Tensor, p_clean: torch.Tensor) -> torch.Tensor:
    """Temporal ensembling (Laine & Aila 2017) as in the authors' code, called from ``te_start`` on:
    p_i <- eta * p_i + (1 - eta) * p(x_i) for the examples of the batch; returns the l1-normalized
    targets p_i / sum(p_i)."""
    eta = ctx.cfg.te_momentum
    p = eta * ctx.soft_labels[idx] + (1 - eta) * p_clean
    ctx.soft_labels[idx] = p
    return p / p.sum(1, keepdim=True)


def kd_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * mean over the batch of the cross-entropy between softmax(teacher / T) and softmax(student / T)
    (Hinton et al. 2015; Chen et al.'s loss_fn_kd). It is KL(teacher || student) plus the teacher's entropy, a
    constant, so it has the KL's gradients."""
    target = F.softmax(teacher_logits.float() / temperature, 1)
    return -(target * F.log_softmax(student_logits.float() / temperature, 1)).sum(1).mean() * temperature ** 2


def small_loss_ids(losses: torch.Tensor, forget_rate: float) -> torch.Tensor:
    """Positions of the round((1 - forget_rate) * B) smallest of ``losses`` (at least one), smallest first:
    the examples a Co-teaching network judges clean and passes to its peer."""
    keep = max(1, round((1.0 - forget_rate) * len(losses)))
    return torch.argsort(losses.detach(), stable=True)[:keep]


# --- the methods' settings: groups and checks (RunConfig.validate runs them for every config) --------------

TRADES = ("trades_beta",)
TE = ("te_momentum", "te_weight", "te_start", "te_end")


def _bad(msg: str) -> None:
    raise ConfigError(msg)


def check_trades(c: RunConfig) -> None:
    if c.trades_beta < 0:
        _bad(f"trades_beta must be >= 0; got {c.trades_beta}")
    if not math.isfinite(c.trades_beta):
        _bad(f"trades_beta must be finite; got {c.trades_beta}")


def check_mix(c: RunConfig) -> None:
    if c.gamma_ramp_epochs < 1:
        _bad(f"gamma_ramp_epochs must be >= 1; got {c.gamma_ramp_epochs}")


def check_te(c: RunConfig) -> None:
    if c.te_weight < 0:
        _bad(f"te_weight must be >= 0; got {c.te_weight}")
    if not math.isfinite(c.te_weight):
        _bad(f"te_weight must be finite; got {c.te_weight}")
    if not (0.0 <= c.te_momentum < 1.0):
        _bad(f"te_momentum must be in [0, 1); got {c.te_momentum}")
    if c.te_start < 1:
        _bad(f"te_start must be >= 1; got {c.te_start}")
    if c.te_start > c.te_end:
        _bad(f"te_start ({c.te_start}) must not be after te_end ({c.te_end})")


def check_sat(c: RunConfig) -> None:
    if c.sat_start < 1:
        _bad(f"sat_start must be >= 1; got {c.sat_start}")
    if not (0.0 <= c.sat_momentum < 1.0):
        _bad(f"sat_momentum must be in [0, 1); got {c.sat_momentum}")


def _epochs_message(c: RunConfig) -> str:  # the one wording of KD-SWA's and Co-teaching's epoch keys' errors
    return f"swa_start and coteach_gradual must be >= 1; got {c.swa_start} and {c.coteach_gradual}"


def check_kd_swa(c: RunConfig) -> None:
    if c.swa_start < 1:
        _bad(_epochs_message(c))
    if not c.kd_temperature > 0 or not math.isfinite(c.kd_temperature):
        _bad(f"kd_temperature must be > 0; got {c.kd_temperature}")
    if not (0.0 <= c.kd_weight <= 1.0 and 0.0 <= c.kd_std_weight <= 1.0
            and c.kd_weight + c.kd_std_weight * bool(c.kd_std_teacher) <= 1.0):
        _bad(f"kd_weight ({c.kd_weight}) and kd_std_weight ({c.kd_std_weight}) must be in [0, 1] and, with "
             f"a standard teacher, sum to at most 1 (the CE term gets the rest)")
    if c.method == "kd_swa" and not c.kd_teacher:
        _bad("method kd_swa needs kd_teacher: another run's checkpoint, e.g. <PGD-AT run dir>/best.pt")
    if c.method != "kd_swa" and (c.kd_teacher or c.kd_std_teacher):
        _bad(f"kd_teacher and kd_std_teacher are used by method kd_swa only; method is {c.method!r}")


def check_coteaching(c: RunConfig) -> None:
    if c.coteach_gradual < 1:
        _bad(_epochs_message(c))
    if not (0.0 <= c.coteach_forget_rate < 1.0):
        _bad(f"coteach_forget_rate must be in [0, 1); got {c.coteach_forget_rate}")


def te_metrics(ctx: Context) -> dict:
    return {"te_weight": ctx.te_weight()}


# --- methods --------------------------------------------------------------------------------------

@method("standard", attacks=False)
def standard(model, x, y, idx, ctx: Context) -> Step:
    """Standard training (ST): cross-entropy on natural examples."""
    logits = model(x)
    return Step(ctx.ce(logits, y), logits, logits)


@method("pgd_at")
def pgd_at(model, x, y, idx, ctx: Context) -> Step:
    """PGD-AT (Madry et al. 2018), Eq. 1-2: cross-entropy on PGD adversarial examples that maximize it. With
    ``label_smoothing`` s > 0 it is Table 2's PGD-AT+LS (Pang et al. 2021, "Bag of tricks for adversarial
    training"): targets (1 - s) one-hot + s / C in the training CE only, the attack keeps the plain CE. Dong et
    al. do not state s; notebook 07 uses 0.1."""
    x_adv = ctx.attack(model, x, ce_objective(y))
    logits = model(x_adv)
    return Step(ctx.ce(logits, y), logits)


@method("trades", settings=TRADES, check=check_trades, extra_forwards=1)
def trades(model, x, y, idx, ctx: Context) -> Step:
    """TRADES (Zhang et al. 2019), Eq. 3: CE(f(x), y) + beta * KL(p(x) || p(x')), x' maximizing the KL
    from x + 0.001 * N(0, I) (authors' code); both terms are differentiated."""
    x_adv = ctx.attack(model, x, kl_objective(clean_probs(model, x)), start="normal")
    logits_nat, logits_adv = model(x), model(x_adv)
    return Step(ctx.ce(logits_nat, y) + ctx.cfg.trades_beta * trades_kl(logits_nat, logits_adv), logits_adv,
                logits_nat)


@method("mix", settings=("gamma_ramp_epochs",), check=check_mix, extra_forwards=3,
        epoch_metrics=lambda ctx: {"gamma": ctx.gamma()})
def mix(model, x, y, idx, ctx: Context) -> Step:
    """Eq. 6: (1 - gamma) * CE(f(x), y) + gamma * max CE(f(x'), y), gamma ramped from 0 to 1 (Sec. 3.2:
    the clean CE term lets PGD-AT converge on random labels)."""
    gamma = ctx.gamma()
    x_adv = ctx.attack(model, x, ce_objective(y))
    logits_adv = model(x_adv)
    loss = gamma * ctx.ce(logits_adv, y)
    if gamma < 1:
        loss = loss + (1 - gamma) * ctx.ce(model(x), y)
    return Step(loss, logits_adv)


@method("pgd_at_te", settings=TE, check=check_te, soft_labels=True, epoch_metrics=te_metrics)
def pgd_at_te(model, x, y, idx, ctx: Context) -> Step:
    """PGD-AT + temporal ensembling, Eq. 7: CE(f(x'), y) + w * ||f(x') - p_hat||^2, where the attack
    maximizes the same sum (authors' code) and p_hat is the normalized ensemble of clean predictions."""
    if ctx.epoch < ctx.cfg.te_start:
        return pgd_at(model, x, y, idx, ctx)
    target, w = update_soft_labels(ctx, idx, clean_probs(model, x)), ctx.te_weight()
    ce = ce_objective(y)
    x_adv = ctx.attack(model, x, lambda z: ce(z) + w * te_term(z, target))
    logits = model(x_adv)
    return Step(ctx.ce(logits, y) + w * te_term(logits, target).mean(), logits)


@method("trades_te", settings=TRADES + TE, check=(check_trades, check_te), soft_labels=True,
        epoch_metrics=te_metrics, extra_forwards=1)
def trades_te(model, x, y, idx, ctx: Context) -> Step:
    """TRADES + temporal ensembling (Sec. 4.2): the TRADES loss plus w * ||f(x) - p_hat||^2 on the clean
    input; the attack maximizes beta * KL + w * ||f(x') - p_hat||^2 (authors' code)."""
    if ctx.epoch < ctx.cfg.te_start:
        return trades(model, x, y, idx, ctx)
    p_clean = clean_probs(model, x)
    target, w = update_soft_labels(ctx, idx, p_clean), ctx.te_weight()
    kl, beta = kl_objective(p_clean), ctx.cfg.trades_beta
    x_adv = ctx.attack(model, x, lambda z: beta * kl(z) + w * te_term(z, target), start="normal")
    logits_nat, logits_adv = model(x), model(x_adv)
    loss = ctx.ce(logits_nat, y) + beta * trades_kl(logits_nat, logits_adv) + w * te_term(logits_nat, target).mean()
    return Step(loss, logits_adv, logits_nat)


@method("pgd_at_sat", settings=("sat_momentum", "sat_start"), check=check_sat, soft_labels=True)
def pgd_at_sat(model, x, y, idx, ctx: Context) -> Step:
    """PGD-AT + self-adaptive training (SAT; Huang, Zhang & Zhang, NeurIPS 2020, Algorithm 1), a Table 2
    baseline. Each example keeps a target t_i (its row of ``ctx.soft_labels``, one-hot(y_i) at first use).
    From ``sat_start`` on: t_i <- alpha * t_i + (1 - alpha) * softmax(f(x_i)), then the loss is
    -sum_i w_i sum_c t_ic log p_c(x'_i) / sum_i w_i with w_i = max_c t_ic (neither differentiated); the
    attack is PGD-AT's (CE with y). Before ``sat_start`` it is PGD-AT; label smoothing is not applied.
    As in the authors' TRADES+SAT code (github.com/LayneH/self-adaptive-training, losses/trades.py), the
    update uses the prediction on the natural input in train mode (batch statistics), taken after the
    attack; here that forward is extra, so it runs on copies of the buffers (BN running statistics stay
    PGD-AT's). Defaults alpha = 0.9, E_s = 70 are the authors' adversarial-training script
    (scripts/cifar10/run_trades_sat.sh: TRADES+SAT, WRN-34-10, 100 epochs, lr decay at 75/90), not checked
    against the paper's text; E_s = 60 (of 200 epochs) is their label-noise setting (run_sat.sh). Dong et
    al. (Table 2) do not state their SAT settings."""
    if ctx.epoch < ctx.cfg.sat_start:
        return pgd_at(model, x, y, idx, ctx)
    x_adv = ctx.attack(model, x, ce_objective(y))
    with torch.no_grad():
        buffers = {name: b.clone() for name, b in model.named_buffers()}
        p = F.softmax(torch.func.functional_call(model, buffers, (x,)).float(), 1)
        t = ctx.soft_labels[idx]
        fresh = (t == 0).all(1)
        t = torch.where(fresh[:, None], F.one_hot(y, t.shape[1]).to(t.dtype), t)  # no sync: CUDA graphs
        t = ctx.cfg.sat_momentum * t + (1 - ctx.cfg.sat_momentum) * p
        ctx.soft_labels[idx] = t
        w = t.max(1).values
    logits = model(x_adv)
    loss = -(w * (t * F.log_softmax(logits.float(), 1)).sum(1)).sum() / w.sum()
    return Step(loss, logits)


@method("kd_swa", settings=("kd_teacher", "kd_std_teacher", "kd_weight", "kd_std_weight", "kd_temperature",
                           "swa_start"),
        check=check_kd_swa, teachers=("kd_teacher", "kd_std_teacher"), averaging=True)
def kd_swa(model, x, y, idx, ctx: Context) -> Step:
    """KD-SWA (Chen, Zhang, Liu, Chang & Wang, ICLR 2021, "Robust overfitting may be mitigated by properly
    learned smoothening"), a Table 2 baseline: PGD-AT whose CE is mixed with knowledge distillation from frozen
    teachers on the same adversarial input x' (the attack is PGD-AT's, CE with y):
    (1 - l_r - l_s) CE(f(x'), y) + l_r KD(f(x'), f_rob(x')) + l_s KD(f(x'), f_std(x')), KD = ``kd_term`` at
    temperature T. f_rob (``kd_teacher``) is an early-stopped (best-checkpoint) adversarially trained model,
    f_std (``kd_std_teacher``, optional; l_s = 0 without it) a standard-trained one. The weights' other half,
    stochastic weight averaging from ``swa_start`` on, lives in ``memlib.train`` (the averaged model is the one
    evaluated and saved). Defaults follow Chen et al.'s code (github.com/VITA-Group/Alleviate-Robust-Overfitting,
    main_adv.py): T = 2, l_r = 0.6, l_s = 0.1 (CE weight 0.3), SWA every epoch from 5 epochs after the first lr
    decay; Dong et al. do not state their KD-SWA settings. Label smoothing (``ctx.ce``) applies to the CE term."""
    c = ctx.cfg
    x_adv = ctx.attack(model, x, ce_objective(y))
    logits = model(x_adv)
    with torch.no_grad():
        robust = ctx.teachers["kd_teacher"](x_adv)
        std_teacher = ctx.teachers.get("kd_std_teacher")
        standard = std_teacher(x_adv) if std_teacher is not None else None
    w_std = c.kd_std_weight if standard is not None else 0.0
    loss = (1 - c.kd_weight - w_std) * ctx.ce(logits, y) + c.kd_weight * kd_term(logits, robust, c.kd_temperature)
    if standard is not None:
        loss = loss + w_std * kd_term(logits, standard, c.kd_temperature)
    return Step(loss, logits)


@method("coteaching", settings=("coteach_forget_rate", "coteach_gradual"), check=check_coteaching, peer=True,
        epoch_metrics=lambda ctx: {"forget_rate": ctx.forget_rate()})
def coteaching(model, x, y, idx, ctx: Context) -> Step:
    """Co-teaching (Han et al., NeurIPS 2018, Algorithm 1) adapted to PGD-AT, a Table 2 baseline: two networks
    (``model`` and ``ctx.peer``, initialized differently) each attack their own inputs with PGD-AT's attack; each
    keeps the fraction R(T) of the batch with its smallest adversarial CE (``small_loss_ids``, not differentiated)
    and its peer is trained on those: loss = mean CE_model over the peer's picks + mean CE_peer over the model's
    picks. The peer's parameters sit in the same optimizer, so one step on this sum is the two networks' separate
    steps. R(T) = 1 - tau min(T/T_k, 1) (``Context.forget_rate``); Han et al. set tau to the (known) noise rate
    and T_k = 10; for AT no noise rate is known and Dong et al. do not state theirs: defaults tau = 0.2 (Han
    et al.'s code's default noise rate) and T_k = 10. ``model`` is the one evaluated; the logits are its own."""
    rate = ctx.forget_rate()
    losses, logits = [], None
    for net in (model, ctx.peer):
        x_adv = ctx.attack(net, x, ce_objective(y))
        out = net(x_adv)
        logits = out if logits is None else logits
        losses.append(F.cross_entropy(out.float(), y, reduction="none", label_smoothing=ctx.cfg.label_smoothing))
    picked_by_model, picked_by_peer = small_loss_ids(losses[0], rate), small_loss_ids(losses[1], rate)
    return Step(losses[0][picked_by_peer].mean() + losses[1][picked_by_model].mean(), logits)

