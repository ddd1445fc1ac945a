"""memlib.analysis against known answers, on tiny CPU models (a few seconds in all)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from memlib import analysis as A
from memlib.attacks import ce_objective, kl_objective, pgd
from memlib.evaluate import predict
from memlib.methods import clean_probs
from memlib.models import build_model

EPS, ALPHA, STEPS = 8 / 255, 2 / 255, 3
ATTACK = dict(eps=EPS, alpha=ALPHA, steps=STEPS)

ON_CPU = dict(device="cpu", log=lambda m: None)  # compared with CPU computations: exact numbers


def small_net(seed: int = 0, classes: int = 10) -> nn.Module:
    """A conv net with BatchNorm whose running statistics are not the defaults, left in train mode."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes))
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(32, 3, 8, 8) * 0.8 + 0.1)
    return model.train()


def batch(n: int = 6, seed: int = 1, size: int = 8):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


def direct_norms(model, x, y, x_ce, x_kl, beta=6.0):
    """Per-example gradient norms, one example at a time: zero_grad, backward, norm (eval mode)."""
    model.eval()
    losses = {
        "pgd_at": lambda i: F.cross_entropy(model(x_ce[i:i + 1]), y[i:i + 1]),
        "clean_ce": lambda i: F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]),
        "trades_kl": lambda i: beta * F.kl_div(F.log_softmax(model(x_kl[i:i + 1]), 1),
                                               F.softmax(model(x[i:i + 1]), 1), reduction="sum"),
        "r": lambda i: (F.cross_entropy(model(x_ce[i:i + 1]), y[i:i + 1])
                        - F.cross_entropy(model(x[i:i + 1]), y[i:i + 1])),
    }
    out = {}
    for name, loss in losses.items():
        norms = []
        for i in range(len(y)):
            model.zero_grad()
            loss(i).backward()
            norms.append(torch.cat([p.grad.flatten() for p in model.parameters()]).norm())
        out[name] = torch.stack(norms)
    model.zero_grad()
    return out


def test_per_example_grad_norms_match_one_at_a_time_backward():
    model, (x, y) = small_net(), batch()
    rng = torch.get_rng_state()
    got = A.per_example_grad_norms(model, x, y, seed=0, chunk_size=4, **ATTACK)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's RNG is untouched
    assert model.training and all(m.training for m in model.modules())  # modes restored
    torch.manual_seed(0)  # the same attacks, in the same order (PGD-AT's, then TRADES's)
    x_ce = pgd(model, x, ce_objective(y), **ATTACK)
    x_kl = pgd(model, x, kl_objective(clean_probs(model, x)), start="normal", **ATTACK)
    want = direct_norms(model, x, y, x_ce, x_kl)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got["trades_ce"], got["clean_ce"])
    assert (got["trades_kl"] > 0).all() and (got["r"] > 0).all()

    ratios = A.grad_norm_ratios(model, x, y, seed=0, **ATTACK)
    assert ratios["pgd_at"] == pytest.approx((got["r"] / got["clean_ce"]).mean().item(), rel=1e-5)
    assert ratios["trades"] == pytest.approx((got["trades_kl"] / got["clean_ce"]).mean().item(), rel=1e-5)
    assert A.ratios_from_norms(got) == ratios  # from the norms already computed: the same numbers, no new pass
    each = A.grad_norm_ratios(model, x, y, seed=0, reduce=False, **ATTACK)
    for key, values in A.ratios_from_norms(got, reduce=False).items():
        assert torch.equal(each[key], values) and values.shape == (len(y),)
        assert values.mean().item() == ratios[key]


def test_gradient_of_r_is_adversarial_minus_clean_gradient():
    model, (x, y) = small_net(), batch()
    g_r = A.per_example_gradients(model, x, y, "r", attack_seed=3, **ATTACK)
    g_adv = A.per_example_gradients(model, x, y, "pgd_at", attack_seed=3, **ATTACK)
    g_clean = A.per_example_gradients(model, x, y, "clean_ce")
    assert g_r.shape == (len(y), sum(p.numel() for p in model.parameters()))
    torch.testing.assert_close(g_r, g_adv - g_clean, rtol=1e-4, atol=1e-6)
    norms = A.per_example_grad_norms(model, x, y, ("r",), seed=3, **ATTACK)["r"]
    torch.testing.assert_close(norms, g_r.norm(dim=1), rtol=1e-5, atol=1e-7)


def test_per_example_grad_norms_on_a_memlib_resnet_with_uint8_inputs():
    torch.manual_seed(0)
    model = build_model("resnet18", width=0.0625)
    x8 = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    y = torch.tensor([1, 2, 3])
    got = A.per_example_grad_norms(model, x8, y, ("pgd_at", "clean_ce"), seed=0, **ATTACK)
    torch.manual_seed(0)
    x = x8.float() / 255
    x_ce = pgd(model, x, ce_objective(y), **ATTACK)
    want = direct_norms(model, x, y, x_ce, x_ce)
    torch.testing.assert_close(got["pgd_at"], want["pgd_at"], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got["clean_ce"], want["clean_ce"], rtol=1e-4, atol=1e-6)


def test_probe_examples_are_class_balanced_seeded_and_respect_the_mask():
    labels = torch.arange(10).repeat_interleave(30)  # sorted by class, like the offline CIFAR-10 copy
    ids = A.probe_examples(labels, 20, seed=0)
    assert torch.bincount(labels[ids], minlength=10).tolist() == [2] * 10  # not the first 20 (all class 0)
    assert ids.tolist() == sorted(set(ids.tolist()))
    assert torch.equal(ids, A.probe_examples(labels, 20, seed=0))
    assert not torch.equal(ids, A.probe_examples(labels, 20, seed=1))
    noisy = torch.zeros(len(labels), dtype=torch.bool)
    noisy[::3] = True
    for among in (noisy, ~noisy):
        picked = A.probe_examples(labels, 30, seed=0, among=among)
        assert among[picked].all() and len(picked) == 30
        assert torch.bincount(labels[picked], minlength=10).tolist() == [3] * 10
    with pytest.raises(ValueError, match="only 100 qualify"):
        A.probe_examples(labels, 101, among=noisy)


def test_grad_norms_by_noise_averages_each_group():
    model, (x, y) = small_net(), batch(8)
    noisy = torch.tensor([1, 0, 0, 1, 0, 1, 0, 0], dtype=torch.bool)
    got = A.grad_norms_by_noise(model, x, y, noisy, "pgd_at", seed=0, **ATTACK)
    norms = A.per_example_grad_norms(model, x, y, ("pgd_at",), seed=0, **ATTACK)["pgd_at"]
    assert got["noisy"] == pytest.approx(norms[noisy].mean().item())
    assert got["clean"] == pytest.approx(norms[~noisy].mean().item())


def test_flat_gradient_is_the_mean_of_per_example_gradients():
    model, (x, y) = small_net(), batch()
    for loss in ("pgd_at", "trades", "clean_ce"):
        flat = A.flat_gradient(model, x, y, loss, seed=5, batch_size=len(y), **ATTACK)
        per = A.per_example_gradients(model, x, y, loss, attack_seed=5, **ATTACK)
        torch.testing.assert_close(flat, per.mean(0), rtol=1e-4, atol=1e-6)


def test_filter_normalized_direction():
    torch.manual_seed(0)
    model = build_model("resnet18", width=0.0625)
    d = A.filter_normalized_direction(model, torch.Generator().manual_seed(0))
    again = A.filter_normalized_direction(model, torch.Generator().manual_seed(0))
    assert d.keys() == dict(model.named_parameters()).keys()
    for name, p in model.named_parameters():
        assert d[name].shape == p.shape and torch.equal(d[name], again[name])
        if p.dim() <= 1:  # biases, BatchNorm weights and biases
            assert not d[name].any()
        else:
            torch.testing.assert_close(d[name].flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1))


@pytest.mark.parametrize("per_example", [False, True])
def test_gradient_change_along_direction(per_example):
    model, (x, y) = small_net(), batch()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    out = A.gradient_change_along_direction(model, x, y, [-0.05, 0.0, 0.05], "pgd_at", seed=0,
                                            per_example=per_example, **ATTACK)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n])  # restored exactly
    for n, b in model.named_buffers():
        assert torch.equal(b, buffers[n])  # eval mode: BatchNorm statistics untouched
    assert torch.equal(out["lambda"], torch.tensor([-0.05, 0.0, 0.05]))
    assert out["l2"][1] == 0 and out["cosine"][1] == pytest.approx(1.0, abs=1e-6)
    assert (out["l2"][[0, 2]] > 0).all() and (out["cosine"][[0, 2]] < 1).all()


def test_projected_gradients_are_a_fixed_linear_map_that_roughly_keeps_cosines():
    model, (x, y) = small_net(), batch()
    full = A.per_example_gradients(model, x, y, "clean_ce")
    k = 4000
    proj = A.per_example_gradients(model, x, y, "clean_ce", project_dim=k, seed=7)
    assert proj.shape == (len(y), k)
    basis = A._random_projection(torch.eye(full.shape[1]), k, seed=7)  # M / sqrt(k), row by row
    torch.testing.assert_close(proj, full @ basis, rtol=1e-4, atol=1e-5)
    assert torch.equal(proj, A.per_example_gradients(model, x, y, "clean_ce", project_dim=k, seed=7))
    torch.testing.assert_close(A.successive_epoch_cosine(full, full), torch.ones(len(y)))
    shifted = full.roll(1, dims=0)  # pairs of different examples: cosines spread over (-1, 1)
    exact = A.successive_epoch_cosine(full, shifted)
    approx = A.successive_epoch_cosine(proj, A.per_example_gradients(model, x.roll(1, 0), y.roll(1, 0), "clean_ce",
                                                                      project_dim=k, seed=7))
    assert (approx - exact).abs().max() < 0.1  # Johnson-Lindenstrauss: error ~ 1 / sqrt(k)


def test_input_hessian_top_eigenvalue_of_logistic_regression():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5)).double()
    x, y = torch.rand(4, 3, 4, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 4])
    got = A.input_hessian_top_eigenvalue(model, x, y, iters=200, reduction="none")
    for i in range(len(y)):
        H = torch.autograd.functional.hessian(lambda xi: F.cross_entropy(model(xi[None]), y[i:i + 1]), x[i])
        top = torch.linalg.eigvalsh(H.reshape(48, 48)).max()
        # analytic: H = W^T (diag(p) - p p^T) W
        p = F.softmax(model(x[i:i + 1]), 1)[0]
        W = model[1].weight
        torch.testing.assert_close(H.reshape(48, 48), W.T @ (torch.diag(p) - torch.outer(p, p)) @ W)
        assert got[i].item() == pytest.approx(top.item(), rel=1e-6)
    assert A.input_hessian_top_eigenvalue(model, x, y, iters=200) == pytest.approx(got.mean().item())


def test_norm_based_complexities():
    model = small_net()
    norms = A.spectral_norms(model)
    weights = {"0": model[0].weight, "3": model[3].weight, "8": model[8].weight}
    assert norms.keys() == weights.keys()
    for name, w in weights.items():
        want = torch.linalg.matrix_norm(w.detach().reshape(len(w), -1), ord=2).item()
        assert norms[name] == pytest.approx(want, rel=1e-6)
    gamma = 0.37
    spec = A.spectral_complexity(model, gamma)
    product = np.prod(list(norms.values()))
    assert spec["value"] == pytest.approx(product / gamma ** 2, rel=1e-9)
    assert spec["log10"] == pytest.approx(np.log10(product / gamma ** 2), rel=1e-9)
    l1 = sum(w.abs().sum().item() for w in weights.values()) / gamma
    assert A.l1_complexity(model, gamma) == pytest.approx(l1, rel=1e-6)
    with pytest.raises(ValueError):
        A.l1_complexity(model, -1.0)


def test_margins_positive_iff_correct():
    model, (x, _) = small_net(), batch(40)
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = torch.where(torch.arange(40) % 2 == 0, pred, (pred + 1 + torch.arange(40) % 9) % 10)
    m = A.per_example_margins(model, x, y, batch_size=16)
    assert torch.equal(m > 0, pred == y)
    assert A.margin(model, x, y) == pytest.approx(torch.quantile(m.double(), 0.05).item())
    assert A.margin(model, x, y, percentile=50) == pytest.approx(torch.quantile(m.double(), 0.5).item())
    # adversarial margins: > 0 exactly when the PGD evaluation attack (same start) fails
    m_adv = A.per_example_margins(model, x, y, seed=0, batch_size=40, **ATTACK)
    torch.manual_seed(0)
    robust = predict(model, x, y, f"pgd-{STEPS}", eps=EPS, alpha=ALPHA, batch_size=40) == y
    assert torch.equal(m_adv > 0, robust)
    assert (m_adv <= m + 1e-5).float().mean() > 0.9


@pytest.mark.parametrize("ties", [False, True])
def test_kendall_tau_matches_scipy(ties):
    from scipy.stats import kendalltau

    rng = np.random.default_rng(ties)
    n = 1500
    a = rng.integers(0, 25, n).astype(float) if ties else rng.normal(size=n)
    b = a + rng.normal(size=n) * 4
    b = np.round(b) if ties else b
    want = kendalltau(a, b).statistic  # tau-b
    assert A.kendall_tau(a, b) == pytest.approx(want, abs=1e-12)
    assert A.kendall_tau(torch.tensor(a), torch.tensor(-b)) == pytest.approx(-want, abs=1e-12)
    assert A.kendall_tau(a, a) == pytest.approx(1.0)
    assert A.kendall_tau(a, -a) == pytest.approx(-1.0)
    for m in (2, 3, 7, 33):  # small sizes, odd lengths
        assert A.kendall_tau(a[:m], b[:m]) == pytest.approx(kendalltau(a[:m], b[:m]).statistic, abs=1e-12)
    assert np.isnan(A.kendall_tau(np.ones(5), np.arange(5)))


def test_adversarial_losses_and_hardest_examples():
    model, (x, y) = small_net(), batch(20)
    x8 = (x * 255).round().to(torch.uint8)
    adv = A.adversarial_losses(model, x8, y, batch_size=8, seed=0, **ATTACK)
    model.eval()
    with torch.no_grad():
        clean = F.cross_entropy(model(x8.float() / 255), y, reduction="none")
    assert adv.shape == (20,) and adv.dtype == torch.float32
    assert adv.mean() > clean.mean() and (adv >= clean - 1e-4).float().mean() > 0.9
    assert torch.equal(adv, A.adversarial_losses(model, x8, y, batch_size=8, seed=0, **ATTACK))
    top = A.hardest_examples(adv, 5)
    assert torch.equal(top, torch.argsort(adv, descending=True)[:5])
    assert (adv[top] >= adv.max() - 1e-12).any() and adv[top].min() >= adv.sort().values[-5]


def _trained_net() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """PGD-AT (eps 2/255) of the small net on 32 examples until the adversarial loss is small."""
    model = small_net(seed=3)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(32, 3, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(60):
        x_adv = pgd(model, x, ce_objective(y), eps=2 / 255, alpha=1 / 255, steps=2)
        opt.zero_grad()
        F.cross_entropy(model(x_adv), y).backward()
        opt.step()
    return model, x, y


def test_weight_flatness():
    model, x, y = _trained_net()
    kw = dict(eps=2 / 255, alpha=1 / 255, steps=2, seed=4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    flat0 = A.weight_flatness(model, x, y, gamma=0.0, **kw)
    assert flat0["flatness"] == 0.0
    out = A.weight_flatness(model, x, y, gamma=0.5, directions=3, **kw)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n])
    assert out["loss"] < 1.0  # a trained minimum of the adversarial loss ...
    assert out["flatness"] > 0  # ... from which random directions go uphill
    assert out["flatness"] == pytest.approx((out["perturbed"] - out["loss"]).mean().item())
    # the exact definition, for the first direction
    d = A.filter_normalized_direction(model, torch.Generator().manual_seed(4))
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.add_(0.5 * d[n])
    first = A.adversarial_losses(model, x, y, eps=2 / 255, alpha=1 / 255, steps=2, seed=4).mean().item()
    assert out["perturbed"][0].item() == pytest.approx(first, rel=1e-5)


def test_run_adversarial_losses_are_the_runs_own_examples_saved_and_reused(tiny_cfg, monkeypatch):
    """Fig. 7(c): the losses of a run's checkpoint on its own training examples and the labels it trained on
    (here noisy ones), saved in the run folder under their attack setting, reused, and read by the tau table."""
    from memlib.data import prepare_data
    from memlib.evaluate import load_weights
    from memlib.io import load_checkpoint, save_checkpoint
    from memlib.report import build_loss_consistency
    from memlib.train import train

    cfgs = [tiny_cfg(epochs=1, noise_rate=0.5, train_subset=40), tiny_cfg(epochs=1, noise_rate=0.5, train_subset=40,
                                                                            seed=1)]
    runs = [train(c).run_dir for c in cfgs]
    attack = {"eps": 4 / 255, "alpha": 1 / 255, "steps": 2, "seed": 3}
    got = A.run_adversarial_losses(runs[0], "final", batch_size=16, device="cpu", **attack)
    data = prepare_data(cfgs[0])
    assert np.array_equal(got["train_ids"], data.train_ids.numpy())
    assert np.array_equal(got["labels"], data.train_labels.numpy())
    assert (data.train_labels != data.train_true_labels).any()  # the labels trained on, not the true ones
    model, _ = load_weights(runs[0], "final")
    want = A.adversarial_losses(model, data.train_images, data.train_labels, batch_size=16, **attack)
    np.testing.assert_allclose(got["losses"], want.numpy(), rtol=1e-5, atol=1e-6)
    assert got["key"] == A.adv_losses_key("final", eps=4 / 255, alpha=1 / 255, steps=2, seed=3)

    # saved in the run folder and reused: a second call computes nothing
    saved = A.read_adversarial_losses(runs[0], got["key"])
    np.testing.assert_array_equal(saved["losses"], got["losses"])
    monkeypatch.setattr(A, "adversarial_losses", lambda *a, **k: pytest.fail("recomputed a saved setting"))
    np.testing.assert_array_equal(
        A.run_adversarial_losses(runs[0], "final", batch_size=16, device="cpu", **attack)["losses"], got["losses"])
    (runs[0] / "final.pt").rename(runs[0] / "final.pt.away")  # weights not carried (e.g. a git checkout): reused
    np.testing.assert_array_equal(
        A.run_adversarial_losses(runs[0], "final", batch_size=16, device="cpu", **attack)["losses"], got["losses"])
    monkeypatch.undo()
    # a checkpoint with other weights (a retrained run) is measured again
    state = load_checkpoint(runs[0] / "final.pt.away")
    state["model"] = {k: v * 1.5 if v.is_floating_point() else v for k, v in state["model"].items()}
    save_checkpoint(runs[0] / "final.pt", state)
    again = A.run_adversarial_losses(runs[0], "final", batch_size=16, device="cpu", **attack)
    assert not np.allclose(again["losses"], got["losses"])
    (runs[0] / "final.pt.away").replace(runs[0] / "final.pt")
    got = A.run_adversarial_losses(runs[0], "final", batch_size=16, device="cpu", **attack)
    np.testing.assert_allclose(got["losses"], want.numpy(), rtol=1e-5, atol=1e-6)
    # another setting is added beside the first; the run's training attack is the default
    default = A.run_adversarial_losses(runs[0], "final", steps=2, device="cpu")
    assert default["key"] == A.adv_losses_key("final", eps=8 / 255, alpha=2 / 255, steps=2, seed=0)
    assert A.read_adversarial_losses(runs[0], got["key"]) is not None
    assert A.read_adversarial_losses(runs[0], "final|linf|pgd-99|eps=1|alpha=1|seed=0") is None

    # the table computes tau from the two files
    other = A.run_adversarial_losses(runs[1], "final", batch_size=16, device="cpu", **attack)
    project = runs[0].parent.parent
    rel = [str(r.relative_to(project)) for r in runs]
    table = build_loss_consistency(project, {"seeds": rel}, got["key"], "t", "s")
    tau = A.kendall_tau(got["losses"], other["losses"])
    assert table["csv_rows"][0][3:6] == [40, round(tau, 6), 0.85]
    assert table["rows"][0][1] == "seed 0 vs 1" and table["rows"][0][3].endswith("(0.85)")
    missing = build_loss_consistency(project, {"seeds": rel}, "final|linf|pgd-99|eps=1|alpha=1|seed=0", "t", "s")
    assert missing["csv_rows"][0][4] is None


def test_complexity_measures_are_their_parts_and_the_curve_passes_through_the_flatness_points():
    """Fig. 6: ``complexity_measures`` is the margin, the two norms over it, the input-Hessian eigenvalue and the
    weight-landscape flatness, each as its own function computes it, with one seed; the 1-D landscape curve
    runs along the first flatness direction; the weights are left untouched; the result is plain JSON."""
    import json

    model, x, y = _trained_net()
    kw = {"eps": 2 / 255, "alpha": 1 / 255, "steps": 2}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = A.complexity_measures(model, x, y, hessian_examples=8, hessian_iters=30, gamma=0.5, directions=2,
                                curve=[-0.5, 0.0, 0.5], seed=4, batch_size=16, **kw)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n])
    json.dumps(out)
    margins = A.per_example_margins(model, x, y, seed=4, batch_size=16, **kw)
    gamma = A.margin(model, x, y, seed=4, batch_size=16, **kw)
    assert out["margin"] == pytest.approx(gamma) and gamma > 0
    assert out["fit"] == pytest.approx((margins > 0).float().mean().item())
    assert out["spectral_log10"] == pytest.approx(A.spectral_complexity(model, gamma)["log10"])
    assert out["l1"] == pytest.approx(A.l1_complexity(model, gamma))
    assert out["hessian"] == pytest.approx(A.input_hessian_top_eigenvalue(model, x[:8], y[:8], 30, seed=4), rel=1e-5)
    flat = A.weight_flatness(model, x, y, gamma=0.5, directions=2, seed=4, batch_size=16, **kw)
    assert out["flatness"] == pytest.approx(flat["flatness"]) and out["flatness"] > 0
    assert out["curve"]["lambda"] == [-0.5, 0.0, 0.5]
    assert out["curve"]["loss"][1] == pytest.approx(flat["loss"], rel=1e-5)
    assert out["curve"]["loss"][2] == pytest.approx(flat["perturbed"][0].item(), rel=1e-5)
    assert out["curve"]["loss"][0] > out["curve"]["loss"][1]  # uphill both ways from the trained minimum
    # a model that fits nothing (labels it never saw) has a negative margin: the norm measures are undefined
    wrong = A.complexity_measures(model, x, (y + 1) % 10, seed=4, batch_size=16, **kw)
    assert wrong["margin"] < 0 and wrong["spectral_log10"] is None and wrong["l1"] is None
    assert "curve" not in wrong
    with pytest.raises(ValueError, match="unknown complexity setting"):
        A.complexity_settings({"gama": 0.5})


def test_run_complexity_measures_the_runs_own_examples_saves_reuses_and_feeds_the_table(tiny_cfg, monkeypatch):
    """Fig. 6 on run folders: the measures of final.pt on the run's own training images with the labels it was
    trained on (random ones here), saved in complexity.json under the settings, reused, and read by the table
    builder with Kendall's tau against the robust gap."""
    import json
    from pathlib import Path

    from memlib.data import prepare_data
    from memlib.evaluate import load_weights
    from memlib.io import load_checkpoint, save_checkpoint
    from memlib.report import build_complexity, build_init_comparison
    from memlib.runs import read_metrics
    from memlib.train import train

    cfgs = [tiny_cfg(epochs=1, train_subset=40, method="trades"), tiny_cfg(epochs=1, train_subset=40, noise_rate=1.0)]
    runs = [train(c).run_dir for c in cfgs]
    settings = {"examples": 20, "steps": 1, "hessian_examples": 4, "hessian_iters": 3, "directions": 1,
                "curve": [0.0, 0.5], "curve_examples": 4}

    # the examples: 20 of the run's own training images, class-balanced, with the labels it trained on
    x, y = A.complexity_examples(runs[1], settings)
    data = prepare_data(cfgs[1])
    same = (x[:, None] == data.train_images[None]).flatten(2).all(2)
    assert (same.sum(1) == 1).all()
    where = same.float().argmax(1)
    assert len(set(where.tolist())) == 20 and torch.equal(y, data.train_labels[where])
    assert (data.train_labels != data.train_true_labels).any()  # random labels, not the true ones
    assert torch.bincount(data.train_true_labels[where], minlength=10).tolist() == [2] * 10

    got = A.run_complexity(runs[1], settings, **ON_CPU)
    model, _ = load_weights(runs[1], "final")
    s = A.complexity_settings(settings)
    want = A.complexity_measures(model, x, y, eps=8 / 255, alpha=2 / 255, steps=1, hessian_examples=4, hessian_iters=3,
                                 directions=1, curve=[0.0, 0.5], curve_examples=4, seed=0, batch_size=512)
    for k in ("margin", "hessian", "flatness", "adv_loss"):
        assert got[k] == pytest.approx(want[k], rel=1e-5), k
    assert got["examples"] == 20 and got["epoch"] == 1

    # saved under the settings' key, and reused: a second call measures nothing ...
    saved = json.loads((runs[1] / A.COMPLEXITY_FILE).read_text())
    assert list(saved) == [A.complexity_key(settings)] == [A.complexity_key(s)]
    monkeypatch.setattr(A, "complexity_measures", lambda *a, **k: pytest.fail("measured a saved setting again"))
    assert A.run_complexity(runs[1], settings, **ON_CPU) == saved[A.complexity_key(settings)]
    (runs[1] / "final.pt").rename(runs[1] / "final.pt.away")  # weights not carried (a git checkout): reused
    assert A.run_complexity(runs[1], settings, **ON_CPU) == saved[A.complexity_key(settings)]
    monkeypatch.undo()
    # ... unless the checkpoint changed (a retrained run)
    state = load_checkpoint(runs[1] / "final.pt.away")
    state["model"] = {k: v * 1.5 if v.is_floating_point() else v for k, v in state["model"].items()}
    save_checkpoint(runs[1] / "final.pt", state)
    assert A.run_complexity(runs[1], settings, **ON_CPU)["adv_loss"] != pytest.approx(got["adv_loss"])
    (runs[1] / "final.pt.away").replace(runs[1] / "final.pt")
    assert A.run_complexity(runs[1], settings, **ON_CPU)["adv_loss"] == pytest.approx(got["adv_loss"])
    # another setting is added beside the first
    A.run_complexity(runs[1], {**settings, "gamma": 0.25}, **ON_CPU)
    assert len(json.loads((runs[1] / A.COMPLEXITY_FILE).read_text())) == 2

    # the table: one row per model, the gap from metrics.jsonl, and Kendall's tau of each measure with the gap
    A.run_complexity(runs[0], settings, **ON_CPU)
    table = build_complexity(Path("/"), {"true": str(runs[0]), "random": str(runs[1])}, settings, "t", "s")
    assert [r[0] for r in table["rows"]][:2] == ["true", "random"] and table["rows"][1][1] == "random"
    gaps = [100 * (read_metrics(r)[-1]["train_rob_acc"] - read_metrics(r)[-1]["test_rob_acc"]) for r in runs]
    assert [row[6] for row in table["csv_rows"][:2]] == pytest.approx(gaps, abs=1e-3)
    cx = [A.run_complexity(r, settings, **ON_CPU) for r in runs]
    flat_col = table["csv_columns"].index("flatness")
    tau = A.kendall_tau([c["flatness"] for c in cx], gaps)
    assert table["csv_rows"][2][0] == "kendall_tau" and not np.isnan(tau)
    assert table["csv_rows"][2][flat_col] == pytest.approx(tau, abs=1e-4)
    assert table["csv_rows"][3][0] == "kendall_tau_common"  # over the models with every measure: taus_with_gap
    a10 = build_init_comparison(Path("/"), {"random|vanilla": str(runs[0]), "adversarial|vanilla": str(runs[1])},
                                "t", "s")
    assert [r[:2] for r in a10["rows"]] == [["random", "vanilla"], ["adversarial", "vanilla"]]
    assert a10["csv_rows"][0][2] == pytest.approx(100 * read_metrics(runs[0])[-1]["test_nat_acc"], abs=1e-3)


def test_taus_with_gap_over_each_measures_models_or_the_common_ones():
    from memlib.report import taus_with_gap
    gaps = [1.0, 2.0, 3.0, 4.0]
    values = {"flatness": [4.0, 3.0, 1.0, 2.0], "spectral": [None, None, 1.0, 2.0]}
    taus, counts = taus_with_gap(values, gaps)
    assert counts == [4, 2] and taus == [pytest.approx(A.kendall_tau([4, 3, 1, 2], gaps)), pytest.approx(1.0)]
    assert taus[0] < 0
    taus, counts = taus_with_gap(values, gaps, common=True)  # the models 3 and 4 only
    assert counts == [2, 2] and taus == [pytest.approx(1.0), pytest.approx(1.0)]
    assert np.isnan(taus_with_gap({"a": [1.0, None]}, [1.0, 2.0])[0][0])


def test_trades_kl_gradient_stays_finite_for_a_confident_model():
    """A model whose softmax underflows to exact zeros (a TRADES model early on random labels did): the KL
    term's per-example gradient must stay finite, where differentiating p log p with p = softmax gives NaN."""
    model = small_net()
    with torch.no_grad():
        model[-1].weight.mul_(2000.0)  # huge logits: some probabilities are exactly 0 in float32
    x, y = batch()
    model.eval()
    assert (F.softmax(model(x), 1) == 0).any()
    x_adv = (x + 0.01).clamp(0, 1)
    naive = F.kl_div(F.log_softmax(model(x_adv), 1), F.softmax(model(x), 1), reduction="sum")
    grads = torch.autograd.grad(naive, list(model.parameters()))
    assert not all(torch.isfinite(g).all() for g in grads)  # the failure this guards against
    norms = A.per_example_grad_norms(model, x, y, ("trades_kl", "trades"), seed=0, **ATTACK)
    assert all(torch.isfinite(v).all() and (v > 0).any() for v in norms.values())
