"""The benchmark script (benchmarks/bench_train.py) end to end on tiny data: it runs, writes what it prints,
and its numbers are consistent with each other. Its speed is never asserted (that is what the script is for)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from memlib.models import build_model
from memlib.train import train

ROOT = Path(__file__).resolve().parent.parent


def _bench_module(name: str = "bench_train"):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _forward_flops(model: torch.nn.Module) -> tuple[int, int]:
    """FLOPs of one example's forward pass: (all, first convolution's)."""
    x = torch.rand(1, 3, 32, 32)
    with FlopCounterMode(display=False) as counter:
        model(x)
    with FlopCounterMode(display=False) as first_counter:
        model.net.conv1(x)
    return counter.get_total_flops(), first_counter.get_total_flops()


@pytest.mark.slow
def test_benchmark_runs_on_tiny_data_and_evaluates_a_trained_run(tiny_folder, tiny_cfg, tmp_path):
    run = train(tiny_cfg(epochs=1)).run_dir
    out = tmp_path / "results"
    width = 0.0625
    bench = _bench_module()
    with pytest.raises(SystemExit):  # weights of another model: refused before any compute
        bench.main(["--width", "0.125", "--eval-run", str(run), "--out", str(out)])
    assert not out.exists()
    result = bench.main([
        "--width", str(width), "--batch-size", "16", "--batches", "2", "--reps", "2", "--threads", "1",
        "--eval-n", "20", "--aa-n", "10", "--data-path", str(tiny_folder), "--data-dir", str(tmp_path / "data"),
        "--eval-run", str(run), "--out", str(out), "--tag", "tiny"])

    assert json.loads((out / "cpu-1thread-tiny.json").read_text()) == json.loads(json.dumps(result))
    assert "| speed-up (ratio of medians) |" in (out / "cpu-1thread-tiny.md").read_text()
    assert "imagefolder" in result["data"]
    assert len(result["reference_examples_per_s"]) == len(result["memlib_examples_per_s"]) == 2
    assert result["speedup"] == pytest.approx(result["memlib_median"] / result["reference_median"])
    assert result["memlib_achieved_flops"] == pytest.approx(
        result["memlib_train_flops_per_example"] * result["memlib_median"])

    # a PGD-10 AT step is 11 forward passes, 10 backward passes to the input only (the attack computes no
    # parameter gradients) and one full backward pass, which needs no input gradient of the first convolution:
    # 23 forward passes' FLOPs less the first convolution's; with parameter gradients in the attack it would be 33
    forward, first_conv = _forward_flops(build_model("resnet18", width=width))
    assert result["memlib_train_flops_per_example"] == pytest.approx(23 * forward - first_conv, rel=1e-3)
    assert result["conv_flops_share"] > 0.99  # everything but the last linear layer is a convolution
    assert 0 < result["conv_time_share"] < 1
    assert result["conv_achieved_flops"] > result["memlib_achieved_flops"]

    assert result["eval_weights"] == Path(run).name
    accs = result["eval_accuracy_on_autoattack_points"]
    assert accs["pgd-10"] <= accs["natural"]
    if result["eval_autoattack_examples_per_s"] is not None:  # AutoAttack installed
        assert accs["autoattack"] <= accs["natural"]


def test_amp_check_compares_bf16_with_fp32_evaluation_of_a_trained_run(tiny_cfg, tmp_path):
    from memlib.data import balanced_subset, load_split
    from memlib.evaluate import accuracy, load_weights
    cfg = tiny_cfg(epochs=1)
    run = train(cfg).run_dir
    out = tmp_path / "results"
    result = _bench_module("amp_check").main([str(run), "--n", "20", "--attacks", "natural,pgd-3", "--device", "cpu",
                                             "--out", str(out)])
    assert json.loads((out / f"amp-check-cpu-{Path(run).name}.json").read_text()) == json.loads(json.dumps(result))
    assert result["examples"] == 20 and [r["attack"] for r in result["rows"]] == ["natural", "pgd-3"]
    test = load_split(cfg, train=False)
    ids = balanced_subset(test.labels, 20, seed=0)
    model, _ = load_weights(run, "final")
    natural, pgd = result["rows"]
    assert natural["fp32"] == pytest.approx(accuracy(model, test.images[ids], test.labels[ids], eps=cfg.eps,
                                                     alpha=cfg.alpha))
    assert natural["other_start_predictions_differ"] == 0  # no random start: fp32 is deterministic
    assert pgd["fp32"] <= natural["fp32"] + 1e-9
    for r in result["rows"]:  # an accuracy difference needs at least as many changed predictions
        assert 20 * abs(r["difference"]) <= r["predictions_differ"] + 1e-6
        assert 20 * abs(r["other_start_difference"]) <= r["other_start_predictions_differ"] + 1e-6
