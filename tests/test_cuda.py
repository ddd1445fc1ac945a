"""The CUDA path (bf16 autocast, channels_last, data on the device): skipped where no GPU is present, so CI
(CPU only) skips it; run it on a GPU machine with ``python -m pytest tests/test_cuda.py``."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from memlib.attacks import ce_objective, pgd
from memlib.config import MemlibError
from memlib.data import Loader, augment, load_split
from memlib.evaluate import accuracy, load_weights
from memlib.io import load_checkpoint
from memlib.methods import METHODS
from memlib.models import build_model, fold_bn
from memlib.train import train

# deterministic cuBLAS must be configured before the first CUDA call
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
EPS, ALPHA = 8 / 255, 2 / 255


def _model(device, channels_last: bool):
    torch.manual_seed(0)
    model = build_model("resnet18", width=0.25).to(device).eval()
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _batch(n=64):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_bf16_channels_last_logits_match_fp32_cpu():
    x, _ = _batch()
    ref = _model("cpu", False)(x)
    model = _model("cuda", True)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(x.cuda().contiguous(memory_format=torch.channels_last)).float().cpu()
    # bf16 keeps 8 bits of mantissa: agreement to a few percent of the logits' scale, same top class mostly
    assert (out - ref).abs().max() <= 0.05 * ref.abs().max() + 1e-3
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.9


def test_folded_view_matches_the_model_in_bf16_and_inside_a_cuda_graph():
    """BatchNorm folded into the convolutions (the attacks' default) on CUDA: the same logits as the model up
    to bf16 rounding, and a graph that recorded the folding replays it from the current weights."""
    x, _ = (t.cuda() for t in _batch())
    x = x.contiguous(memory_format=torch.channels_last)
    model = _model("cuda", True)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        ref, out = model(x).float(), fold_bn(model)(x).float()
        assert (out - ref).abs().max() <= 0.05 * ref.abs().max() + 1e-3
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            fold_bn(model)(x)  # warm-up outside the capture
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = fold_bn(model)(x).float()
        for p in model.parameters():  # an in-place weight update, as SGD makes
            p.mul_(0.9)
        graph.replay()
        expected = model(x).float()
    assert (captured - expected).abs().max() <= 0.05 * expected.abs().max() + 1e-3


def test_pgd_under_bf16_autocast_stays_in_the_ball_and_raises_the_loss():
    x, y = (t.cuda() for t in _batch())
    x = x.contiguous(memory_format=torch.channels_last)
    model = _model("cuda", True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        x_adv = pgd(model, x, ce_objective(y), eps=EPS, alpha=ALPHA, steps=10)
        with torch.no_grad():
            clean = F.cross_entropy(model(x).float(), y)
            adv = F.cross_entropy(model(x_adv).float(), y)
    assert x_adv.dtype == torch.float32
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert adv > clean


def test_augmentation_is_the_same_on_cuda_and_cpu():
    images = torch.randint(0, 256, (50, 3, 32, 32), dtype=torch.uint8)
    a = augment(images, torch.Generator().manual_seed(3))
    b = augment(images.cuda(), torch.Generator().manual_seed(3))
    assert torch.equal(a, b.cpu())
    labels = torch.arange(50)
    cpu = list(Loader(images, labels, 16, shuffle=True, augment=True, generator=torch.Generator().manual_seed(4)))
    gpu = list(Loader(images.cuda(), labels.cuda(), 16, shuffle=True, augment=True,
                      generator=torch.Generator().manual_seed(4), memory_format=torch.channels_last))
    for (xa, ya, ia), (xb, yb, ib) in zip(cpu, gpu):
        assert xb.is_contiguous(memory_format=torch.channels_last)
        # the uint8 crops are identical (above); x / 255 may round differently in the last bit on the GPU
        torch.testing.assert_close(xa, xb.cpu(), rtol=0, atol=1e-7)
        assert torch.equal(ya, yb.cpu()) and torch.equal(ia, ib.cpu())


# 120 training images in batches of 24: two eager warm-up steps, then a recorded graph replayed three times
GRAPHED = dict(device="cuda", train_subset=120, batch_size=24)


def test_cuda_run_learns_and_its_checkpoint_evaluates_on_the_cpu(tiny_cfg):
    cfg = tiny_cfg(epochs=4, lr_milestones=[3], steps=3, eval_steps=3, **GRAPHED)
    result = train(cfg)
    m = result.metrics
    assert result.finished and all(torch.isfinite(torch.tensor(r["train_loss"])) for r in m)
    assert m[-1]["train_loss"] < m[0]["train_loss"]  # bf16 AMP training makes progress
    state = load_checkpoint(result.run_dir / "final.pt")
    assert all(t.device.type == "cpu" for t in state["model"].values())  # portable checkpoints
    model, _ = load_weights(result.run_dir, "final", device="cpu")
    test = load_split(cfg, False)
    acc_cpu = accuracy(model, test.images, test.labels, "natural", eps=EPS, alpha=ALPHA)
    assert abs(acc_cpu - m[-1]["test_nat_acc"]) <= 0.1  # bf16 on the GPU vs fp32 on the CPU, 60 test images


def test_cuda_resume_equals_uninterrupted_in_deterministic_mode(tiny_cfg, tmp_path):
    """With deterministic kernels, the CUDA RNG state in ``last.pt`` makes a resumed run equal an uninterrupted
    one exactly, as on the CPU (the attack's random starts are drawn on the GPU)."""
    torch.use_deterministic_algorithms(True)
    try:
        kw = dict(method="trades_te", te_start=2, te_end=3, noise_rate=0.2, **GRAPHED)
        whole = train(tiny_cfg(out_dir=str(tmp_path / "a"), **kw))
        cfg = tiny_cfg(out_dir=str(tmp_path / "b"), **kw)
        part = train(cfg, until_epoch=2)
        assert not part.finished
        resumed = train(cfg)
    finally:
        torch.use_deterministic_algorithms(False)
    assert _strip(resumed.metrics) == _strip(whole.metrics)
    a, b = load_checkpoint(whole.run_dir / "final.pt"), load_checkpoint(resumed.run_dir / "final.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def _strip(metrics):
    return [{k: v for k, v in r.items() if k not in ("time", "time_train", "time_eval")} for r in metrics]


@pytest.fixture
def replays(monkeypatch):
    """Counts CUDA graph replays."""
    count = {"n": 0}
    replay = torch.cuda.CUDAGraph.replay

    def counting(self):
        count["n"] += 1
        return replay(self)
    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", counting)
    return count


@pytest.mark.parametrize("method", list(METHODS))
def test_graph_replay_equals_eager_steps_in_deterministic_mode(tiny_cfg, tmp_path, method, replays):
    """Every method's step is recorded, and the replay runs the same kernels on the same random numbers as
    the eager step: same metrics, same weights."""
    kw = dict(method=method, epochs=2, lr_milestones=[1], te_start=1, te_end=2, sat_start=1, gamma_ramp_epochs=2,
              noise_rate=0.2, **GRAPHED)
    torch.use_deterministic_algorithms(True)
    try:
        if method == "kd_swa":
            teacher = train(tiny_cfg(out_dir=str(tmp_path / "t"), epochs=1, **GRAPHED)).run_dir / "best.pt"
            kw.update(kd_teacher=str(teacher), swa_start=2)
        replays["n"] = 0
        graphed = train(tiny_cfg(out_dir=str(tmp_path / "g"), **kw))
        assert replays["n"] == 2 * 3  # 5 full batches an epoch: 2 eager warm-up steps, 3 replays
        eager = train(tiny_cfg(out_dir=str(tmp_path / "e"), cuda_graphs=False, **kw))
        assert replays["n"] == 2 * 3
    finally:
        torch.use_deterministic_algorithms(False)
    assert _strip(graphed.metrics) == _strip(eager.metrics)
    a, b = load_checkpoint(graphed.run_dir / "final.pt"), load_checkpoint(eager.run_dir / "final.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_a_step_that_waits_for_the_gpu_stops_with_one_clear_line(tiny_cfg, monkeypatch):
    from memlib import methods

    def syncing(model, x, y, idx, ctx):
        step = methods.pgd_at(model, x, y, idx, ctx)
        if step.loss.item() < 0:  # a CPU sync: not allowed while recording
            pass
        return step
    monkeypatch.setitem(methods.METHODS, "pgd_at", syncing)
    with pytest.raises(MemlibError, match="cuda_graphs: false"):
        train(tiny_cfg(epochs=1, **GRAPHED))
    torch.cuda.synchronize()
