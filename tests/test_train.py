"""Training runs: what they write, reuse, exact resume (in process and after kill -9), bad checkpoints,
non-finite losses, schedules, and the command line."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from memlib import methods
from memlib.config import RunConfig
from memlib.evaluate import evaluate_run, load_weights
from memlib.io import CheckpointError, load_checkpoint
from memlib.runs import read_metrics
from memlib.train import TrainingDiverged, lr_at, train

TIME_KEYS = ("time", "time_train", "time_eval")
REPO = Path(__file__).resolve().parent.parent


def strip_times(metrics):
    return [{k: v for k, v in m.items() if k not in TIME_KEYS} for m in metrics]


def test_run_writes_metrics_checkpoints_and_record(tiny_cfg):
    cfg = tiny_cfg(noise_rate=0.5)
    result = train(cfg)
    run = result.run_dir
    assert result.finished and not result.reused
    metrics = read_metrics(run)
    assert [m["epoch"] for m in metrics] == [1, 2, 3] and strip_times(metrics) == strip_times(result.metrics)
    for key in ("lr", "train_loss", "train_batch_acc", "train_nat_acc", "train_rob_acc", "test_nat_acc",
                "test_rob_acc", "grad_norm", "grad_sq_norm", "time"):
        assert all(np.isfinite(m[key]) for m in metrics), key
    assert [m["lr"] for m in metrics] == pytest.approx([0.05, 0.05, 0.005])
    for name in ("config.json", "labels.npz", "last.pt", "best.pt", "final.pt", "status.json"):
        assert (run / name).is_file(), name
    record = json.loads((run / "config.json").read_text())
    assert record["data_source"].startswith("imagefolder:") and record["code_version"]
    assert record["config"]["noise_rate"] == 0.5 and record["run_id"] == run.name
    labels = np.load(run / "labels.npz")
    assert len(labels["labels"]) == 60 and (labels["labels"] != labels["true_labels"]).mean() > 0.2
    # best = highest test robust accuracy, ties by natural accuracy
    best = max(metrics, key=lambda m: (m["test_rob_acc"], m["test_nat_acc"]))
    assert load_checkpoint(run / "best.pt")["epoch"] == best["epoch"]
    assert load_checkpoint(run / "final.pt")["epoch"] == 3


def test_finished_run_is_reused_unless_forced(tiny_cfg):
    cfg = tiny_cfg(epochs=1)
    first = train(cfg)
    stamp = (first.run_dir / "final.pt").stat().st_mtime_ns
    again = train(cfg)
    assert again.reused and again.run_dir == first.run_dir
    assert (first.run_dir / "final.pt").stat().st_mtime_ns == stamp
    forced = train(cfg, force=True)
    assert not forced.reused and (first.run_dir / "final.pt").stat().st_mtime_ns != stamp
    assert strip_times(forced.metrics) == strip_times(first.metrics)  # same seed, same numbers


def test_resume_in_process_equals_uninterrupted(tiny_cfg, tmp_path):
    # TE from epoch 2 so the per-example soft labels must survive the resume too
    kw = dict(method="pgd_at_te", te_start=2, te_end=3, dropout=0.1, noise_rate=0.2)
    whole = train(tiny_cfg(out_dir=str(tmp_path / "a"), **kw))
    cfg = tiny_cfg(out_dir=str(tmp_path / "b"), **kw)
    part = train(cfg, until_epoch=2)
    assert not part.finished and len(part.metrics) == 2
    assert torch.count_nonzero(load_checkpoint(part.run_dir / "last.pt")["soft_labels"]) > 0
    resumed = train(cfg)
    assert resumed.finished
    assert strip_times(resumed.metrics) == strip_times(whole.metrics)
    a, b = load_checkpoint(whole.run_dir / "final.pt"), load_checkpoint(resumed.run_dir / "final.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def _write_params(path: Path, cfg: RunConfig) -> Path:
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


def test_kill_minus_9_then_resume_equals_uninterrupted(tiny_cfg, tmp_path):
    kw = dict(epochs=4, lr_milestones=[3], method="trades_te", te_start=2, te_end=4)
    whole = train(tiny_cfg(out_dir=str(tmp_path / "a"), **kw))
    cfg = tiny_cfg(out_dir=str(tmp_path / "b"), **kw)
    params = _write_params(tmp_path / "b.yaml", cfg)
    cmd = [sys.executable, "-m", "memlib", "train", str(params)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = Path(cfg.out_dir) / whole.run_dir.name
    deadline = time.time() + 120
    while time.time() < deadline and len(read_metrics(run_dir)) < 2 and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # somewhere in epoch 3
    proc.wait()
    killed_at = len(read_metrics(run_dir))
    assert 2 <= killed_at < 4, "the run should have been killed mid-way"
    assert not (run_dir / "status.json").exists()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming" in done.stderr + done.stdout
    assert strip_times(read_metrics(run_dir)) == strip_times(whole.metrics)


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_cfg, monkeypatch):
    real = methods.METHODS["standard"]

    def poisoned(model, x, y, idx, ctx):
        step = real(model, x, y, idx, ctx)
        if ctx.epoch == 2 and poisoned.calls == 1:
            step.loss = step.loss * float("nan")
        poisoned.calls += ctx.epoch == 2
        return step
    poisoned.calls = 0
    monkeypatch.setitem(methods.METHODS, "standard", poisoned)
    cfg = tiny_cfg(method="standard")
    with pytest.raises(TrainingDiverged) as info:
        train(cfg)
    msg = str(info.value)
    assert "\n" not in msg and "at epoch 2, batch 2" in msg and "epoch 1" in msg
    run = next(Path(cfg.out_dir).iterdir())
    assert load_checkpoint(run / "last.pt")["epoch"] == 1 and len(read_metrics(run)) == 1
    assert not (run / "status.json").exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other_config", "not_memlib"])
def test_bad_checkpoints_are_refused(tiny_cfg, tmp_path, damage):
    cfg = tiny_cfg(epochs=2)
    run = train(cfg, until_epoch=1).run_dir
    last = run / "last.pt"
    if damage == "truncated":
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    elif damage == "garbage":
        last.write_bytes(os.urandom(4096))
    elif damage == "other_config":
        other = train(tiny_cfg(epochs=2, seed=7, out_dir=str(tmp_path / "other")), until_epoch=1).run_dir
        last.write_bytes((other / "last.pt").read_bytes())
    else:
        torch.save({"weights": torch.zeros(3)}, last)
    with pytest.raises(CheckpointError) as info:
        train(cfg)
    msg = str(info.value)
    assert "\n" not in msg
    expected = {"truncated": "corrupt, truncated", "garbage": "corrupt, truncated",
                "other_config": "another config", "not_memlib": "not a memlib checkpoint"}[damage]
    assert expected in msg


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {_Evil.sentinel}",))


def test_malicious_pickle_is_not_executed(tmp_path):
    _Evil.sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": "memlib-checkpoint-1", "model": _Evil()}, f)
    torch.save({"format": "memlib-checkpoint-1", "x": _Evil()}, tmp_path / "evil2.pt")
    for p in (path, tmp_path / "evil2.pt"):
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(p)
        assert "\n" not in str(info.value)
    assert "possibly malicious" in str(info.value)  # the torch-format file names the blocked import
    assert not _Evil.sentinel.exists()


def test_lr_schedules():
    assert [lr_at(RunConfig(), e) for e in (1, 100, 101, 150, 151, 200)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    step = RunConfig(lr_schedule="step", lr_step_every=100, epochs=300)
    assert [lr_at(step, e) for e in (1, 100, 101, 201)] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    cos = RunConfig(lr_schedule="cosine", lr=0.01, epochs=80)
    lrs = [lr_at(cos, e) for e in range(1, 81)]
    assert lrs[0] == pytest.approx(0.01) and all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] < 1e-4
    assert lr_at(RunConfig(lr_schedule="constant"), 150) == 0.1


def test_optimizers_and_options_train(tiny_cfg):
    for changes in (dict(optimizer="adam", lr=1e-3, weight_decay=0.0), dict(nesterov=True),
                    dict(train_attack="fgsm", alpha=10 / 255), dict(norm="l2", eps=0.5, alpha=0.125),
                    dict(method="mix", gamma_ramp_epochs=2), dict(augment=False, label_smoothing=0.1)):
        result = train(tiny_cfg(epochs=1, **changes))
        assert result.finished and np.isfinite(result.metrics[0]["train_loss"]), changes


def test_evaluate_run_and_weights(tiny_cfg):
    run = train(tiny_cfg(epochs=2)).run_dir
    results = evaluate_run(run, ("natural", "pgd-3", "cw-3"), n=20, log=lambda m: None)
    for which in ("best", "final"):
        r = results[which]
        assert 0 <= r["pgd-3"] <= r["natural"] and r["cw-3"] <= r["natural"]
    cache = json.loads((run / "eval.json").read_text())
    assert len(cache) == 6 and all(v["n"] == 20 for v in cache.values())
    model, state = load_weights(run, "final")
    assert not model.training and state["epoch"] == 2


def test_cli_train_and_errors(tiny_cfg, tmp_path):
    cfg = tiny_cfg(epochs=1)
    params = _write_params(tmp_path / "p.yaml", cfg)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = lambda *args: subprocess.run([sys.executable, "-m", "memlib", *args], cwd=REPO, env=env,
                                       capture_output=True, text=True, timeout=300)
    ok = run("train", str(params))
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "run directory:" in ok.stdout and "test natural" in ok.stdout
    for args, needle in ((("train", str(params), "epoch=3"), "unknown config key 'epoch'"),
                         (("train", str(params), "eps=0"), "eps must be in (0, 1]"),
                         (("train", str(params), "method=magic"), "unknown method 'magic'"),
                         (("evaluate", str(tmp_path)), "not a memlib run directory"),
                         (("train", str(params), "train_subset=100000"), "larger than")):
        bad = run(*args)
        assert bad.returncode == 2 and needle in bad.stderr, (args, bad.stderr[-500:])
        assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
    run_dir = next(Path(cfg.out_dir).iterdir())
    table = run("evaluate", str(run_dir), "--attacks", "natural,pgd-2", "--n", "10")
    assert table.returncode == 0 and "natural Best" in table.stdout, table.stderr[-1000:]


def test_train_many_parallel_equals_sequential_and_dedupes(tiny_cfg, tmp_path):
    from memlib.train import train_many
    cfgs = [tiny_cfg(epochs=2, method=m, out_dir=str(tmp_path / "par")) for m in ("pgd_at", "trades")]
    cfgs.append(cfgs[0])  # listed twice, trained once
    par = train_many(cfgs, jobs=2)
    assert par[0].run_dir == par[2].run_dir and len({r.run_dir for r in par}) == 2
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))  # as in each of the 2 workers: numbers must match exactly
    try:
        seq = [train(tiny_cfg(epochs=2, method=m, out_dir=str(tmp_path / "seq"))) for m in ("pgd_at", "trades")]
    finally:
        torch.set_num_threads(threads)
    for p, s in zip(par, seq):
        assert p.run_dir.name == s.run_dir.name
        assert strip_times(read_metrics(p.run_dir)) == strip_times(s.metrics)


def test_eval_every(tiny_cfg):
    result = train(tiny_cfg(epochs=5, eval_every=2))
    assert ["test_rob_acc" in m for m in result.metrics] == [False, True, False, True, True]
    assert load_checkpoint(result.run_dir / "best.pt")["epoch"] in (2, 4, 5)


def test_a_run_trained_by_another_process_is_refused(tiny_cfg):
    from memlib.config import MemlibError
    from memlib.train import _lock
    cfg = tiny_cfg(epochs=2)
    run = train(cfg, until_epoch=1).run_dir
    held = _lock(run)  # as if another process were training it
    try:
        with pytest.raises(MemlibError) as info:
            train(cfg)
        assert "being trained by another process" in str(info.value)
    finally:
        held.close()
    assert train(cfg).finished
