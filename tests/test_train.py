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
from memlib.runs import code_version, read_metrics, run_dir_for
from memlib.train import TrainingDiverged, lr_at, train

TIME_KEYS = ("time", "time_train", "time_eval")
REPO = Path(__file__).resolve().parent.parent


def strip_times(metrics):
    return [{k: v for k, v in m.items() if k not in TIME_KEYS} for m in metrics]


def test_code_version_is_dirty_only_when_code_differs_from_the_commit(tmp_path):
    """Results and notebooks rewritten in a checkout do not mark the code version dirty; memlib's code does."""
    if subprocess.run(["git", "--version"], capture_output=True).returncode != 0:
        pytest.skip("git is not installed")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    for rel in ("memlib/train.py", "benchmarks/bench.py", "outputs/table.json", "notebooks/01.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("1\n")
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    sha = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    clean = code_version(tmp_path / "memlib")
    assert clean.endswith(f"+{sha}")
    (tmp_path / "outputs/table.json").write_text("2\n")
    (tmp_path / "notebooks/01.py").write_text("2\n")
    assert code_version(tmp_path / "memlib") == clean
    (tmp_path / "benchmarks/bench.py").write_text("2\n")
    assert code_version(tmp_path / "memlib") == clean + ".dirty"
    subprocess.run([*git, "checkout", "-q", "benchmarks/bench.py"], check=True)
    (tmp_path / "memlib/train.py").write_text("2\n")
    assert code_version(tmp_path) == clean + ".dirty"


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


def test_the_training_loop_does_not_branch_on_method_names():
    """What a method needs comes from its registration (memlib.methods.method), never from its name."""
    import re

    import memlib.train

    source = Path(memlib.train.__file__).read_text()
    names = "|".join(methods.METHODS)
    assert not re.search(r"\.method\s*(==|!=|\bin\b|\.(starts|ends)with)", source)
    assert not re.search(rf"[\"'](_te|_sat|{names})[\"']", source)


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


def test_training_batch_accuracies_are_recorded_as_trained(tiny_cfg):
    """train_batch_acc: accuracy on the augmented batches as trained on (adversarial for AT); TRADES also gives
    train_batch_nat_acc from its clean logits; PGD-AT, which computes none, gives none. Unclamped starts train."""
    trades = train(tiny_cfg(epochs=1, method="trades", clamp_start=False, eval_clamp_start=False)).metrics[0]
    pgd_at = train(tiny_cfg(epochs=1, method="pgd_at")).metrics[0]
    assert 0 <= trades["train_batch_nat_acc"] <= 1 and 0 <= trades["train_batch_acc"] <= 1
    assert "train_batch_nat_acc" not in pgd_at and 0 <= pgd_at["train_batch_acc"] <= 1


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
    def run(*args):
        return subprocess.run([sys.executable, "-m", "memlib", *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=300)
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


# --- Table 2 baselines: KD-SWA's averaged model and Co-teaching's peer, resumed exactly ----------------------

def _teacher(tiny_cfg, tmp_path) -> Path:
    return train(tiny_cfg(epochs=2, out_dir=str(tmp_path / "teacher"))).run_dir / "best.pt"


def test_kd_swa_averages_weights_recomputes_bn_and_resumes_exactly(tiny_cfg, tmp_path):
    from torch.optim.swa_utils import update_bn

    from memlib.data import prepare_data
    from memlib.train import swa_bn_batches
    kw = dict(method="kd_swa", kd_teacher=str(_teacher(tiny_cfg, tmp_path)), swa_start=2)
    whole = train(tiny_cfg(out_dir=str(tmp_path / "a"), **kw))
    assert [m.get("swa_n") for m in whole.metrics] == [None, 1, 2]
    cfg = tiny_cfg(out_dir=str(tmp_path / "b"), **kw)
    run = train(cfg, until_epoch=2).run_dir
    after2 = load_checkpoint(run / "last.pt")
    assert int(after2["swa"]["n_averaged"]) == 1
    resumed = train(cfg)
    assert strip_times(resumed.metrics) == strip_times(whole.metrics)
    after3, final = load_checkpoint(run / "last.pt"), load_checkpoint(run / "final.pt")
    a = load_checkpoint(whole.run_dir / "final.pt")
    assert all(torch.equal(a["model"][k], final["model"][k]) for k in a["model"])
    # final.pt holds the average of the weights after epochs 2 and 3, not the last weights
    model, _ = load_weights(run, "final")
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, (after2["model"][name] + after3["model"][name]) / 2)
    assert any(not torch.equal(final["model"][k], after3["model"][k]) for k in after3["model"])
    # and BatchNorm statistics recomputed for it, on the clean training images without augmentation
    data = prepare_data(cfg, torch.device("cpu"))
    fresh = load_weights(run, "final")[0]
    update_bn(swa_bn_batches(data, cfg), fresh)
    for name, buf in fresh.named_buffers():
        if "running" in name:
            torch.testing.assert_close(buf, final["model"][name])
    assert any(not torch.allclose(final["model"][k], after3["model"][k]) for k in final["model"] if "running_mean" in k)
    # the metrics of the epochs with an average are the averaged model's: best.pt is one of them or epoch 1
    best = load_checkpoint(run / "best.pt")
    assert best["epoch"] == max(resumed.metrics, key=lambda m: (m["test_rob_acc"], m["test_nat_acc"]))["epoch"]


def test_swa_batchnorm_statistics_see_every_class_in_each_batch_of_a_class_sorted_set():
    """update_swa recomputes BatchNorm statistics batch by batch; on a class-sorted set (like the offline copy)
    batches in data-set order would each be one class and the running variance would miss the between-class
    part (here about 0.02 instead of the whole set's 0.08)."""
    from types import SimpleNamespace

    from torch.optim.swa_utils import AveragedModel

    from memlib.train import update_swa
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(2).repeat_interleave(200)  # sorted: 200 dark images, then 200 bright ones
    images = (labels[:, None, None, None] * 128 + torch.randint(0, 128, (400, 3, 8, 8), generator=g)).to(torch.uint8)
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(3))
    swa = AveragedModel(model)
    update_swa(swa, model, SimpleNamespace(train_images=images, train_labels=labels),
               RunConfig(eval_batch_size=100), torch.contiguous_format, False)
    x = images.float() / 255
    whole_var = x.transpose(0, 1).reshape(3, -1).var(1)
    torch.testing.assert_close(swa.module[0].running_mean, x.mean((0, 2, 3)), atol=0.01, rtol=0)
    torch.testing.assert_close(swa.module[0].running_var, whole_var, atol=0.01, rtol=0)


def test_kd_swa_needs_its_teacher_checkpoint(tiny_cfg, tmp_path):
    from memlib.config import MemlibError
    with pytest.raises(MemlibError) as info:
        train(tiny_cfg(method="kd_swa", kd_teacher=str(tmp_path / "nowhere" / "best.pt")))
    assert "kd_teacher: no checkpoint at" in str(info.value) and "\n" not in str(info.value)


def test_kd_swa_before_swa_start_saves_the_trained_weights(tiny_cfg, tmp_path):
    """Until swa_start nothing is averaged: the trained model itself is evaluated and saved."""
    cfg = tiny_cfg(epochs=2, method="kd_swa", kd_teacher=str(_teacher(tiny_cfg, tmp_path)), swa_start=5)
    result = train(cfg)
    assert all("swa_n" not in m for m in result.metrics)
    final, last = load_checkpoint(result.run_dir / "final.pt"), load_checkpoint(result.run_dir / "last.pt")
    assert all(torch.equal(final["model"][k], last["model"][k]) for k in last["model"])
    assert int(last["swa"]["n_averaged"]) == 0
    record = json.loads((result.run_dir / "config.json").read_text())
    assert record["identity"]["kd_teacher"].endswith("/best.pt") and record["identity"]["kd_teacher"].count("/") == 1


def test_coteaching_resumes_exactly_with_its_peer(tiny_cfg, tmp_path):
    kw = dict(method="coteaching", coteach_forget_rate=0.5, coteach_gradual=1)
    whole = train(tiny_cfg(out_dir=str(tmp_path / "a"), **kw))
    assert [m["forget_rate"] for m in whole.metrics] == [0.0, 0.5, 0.5]
    cfg = tiny_cfg(out_dir=str(tmp_path / "b"), **kw)
    run = train(cfg, until_epoch=2).run_dir
    last = load_checkpoint(run / "last.pt")
    assert set(last["peer"]) == set(last["model"])
    assert any(not torch.equal(last["peer"][k], last["model"][k]) for k in last["model"])  # two networks
    resumed = train(cfg)
    assert strip_times(resumed.metrics) == strip_times(whole.metrics)
    a, b = load_checkpoint(whole.run_dir / "final.pt"), load_checkpoint(resumed.run_dir / "final.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(b["model"][k], load_checkpoint(run / "last.pt")["model"][k]) for k in b["model"])  # model 1


# --- the best/final table over seeds (Tables 2, C.1, C.2) ------------------------------------------------------

def test_best_final_table_gives_mean_and_std_over_seeds(tiny_cfg, tmp_path):
    from memlib.paper import PAPER_TABLES
    from memlib.report import build_best_final, rebuild_table, write_table
    project = tmp_path
    runs = [train(tiny_cfg(epochs=2, seed=s, out_dir=str(tmp_path / "runs"))).run_dir for s in (0, 1, 2)]
    accs = {}
    for r in runs:
        res = evaluate_run(r, ("natural", "pgd-2"), n=20, log=lambda m: None)
        accs[r] = {k: (100 * res["best"][k], 100 * res["final"][k]) for k in ("natural", "pgd-2")}
    rel = [str(r.relative_to(project)) for r in runs]
    table = build_best_final(project, {"pgd_at": rel, "pgd_at_te": rel[:1]}, "table_c2", ["natural", "pgd-10", "pgd-2"],
                             20, "T", "Setting.")
    nat_best = [accs[r]["natural"][0] for r in runs]
    diffs = [accs[r]["pgd-2"][0] - accs[r]["pgd-2"][1] for r in runs]
    mean, std = np.mean(nat_best), np.std(nat_best, ddof=1)
    row = table["rows"][0]
    assert row[0] == "PGD-AT" and row[1] == f"{mean:.2f} ± {std:.2f} (83.76 ± 0.02)"
    assert row[4] == "– (52.62 ± 0.10)"  # no PGD-10 evaluated here; the paper's cell stays
    assert row[9].startswith(f"{np.mean(diffs):.2f} ± {np.std(diffs, ddof=1):.2f} (–")
    single = table["rows"][1]
    assert single[1] == f"{accs[runs[0]]['natural'][0]:.2f} (82.36 ± 0.18)"  # one run: no ±
    assert "seeds 0, 1, 2" in table["notes"] and "sample standard deviation" in table["notes"]
    csv_row = table["csv_rows"][0]
    assert csv_row[:2] == ["pgd_at", 3] and csv_row[2:6] == [round(mean, 4), round(std, 4), 83.76, 0.02]
    # plain numbers for single-valued paper tables, and a C.1 key shows our network and threat model
    t2 = build_best_final(project, {"kd_swa": rel[:1], "pgd_at|wrn-34-10|linf": rel[:1]}, "table2", ["natural"], 20,
                          "T", "S.")
    assert t2["rows"][0][1].endswith("(84.84)") and t2["rows"][0][0] == "KD-SWA"
    assert t2["rows"][1][0] == "PGD-AT, resnet18 ×0.0625, linf eps 8/255" and t2["rows"][1][1].endswith("(–)")
    write_table(project, "t", table, "best_final", {"runs": {"pgd_at": rel, "pgd_at_te": rel[:1]}, "paper": "table_c2",
                                                    "attacks": ["natural", "pgd-10", "pgd-2"], "n": 20, "title": "T",
                                                    "setting": "Setting."})
    assert rebuild_table(project / "t.json", project) == (project / "t.md").read_text()
    assert set(PAPER_TABLES) >= {"table2", "table_c1", "table_c2"}


def test_published_baseline_tables_are_consistent():
    """Typed-in numbers: every Diff is Best - Final (to the paper's rounding), in Tables 2, C.1 and C.2."""
    from memlib.paper import TABLE1, TABLE2, TABLE_C1, TABLE_C2
    assert set(TABLE2) == {"pgd_at", "pgd_at_ls", "pgd_at_sat", "kd_swa", "coteaching", "pgd_at_te"}
    assert TABLE2["pgd_at"] == TABLE1["cifar10"]["pgd_at"] and TABLE2["kd_swa"]["autoattack"]["best"] == 50.42
    assert len(TABLE_C1) == 8 and TABLE_C1["trades_te|resnet18|l2"]["pgd-10"]["final"] == 72.43
    off = []
    for table in (TABLE2, TABLE_C1, TABLE_C2):
        for key, row in table.items():
            for attack, cell in row.items():
                best, final, diff = (v[0] if isinstance(v, tuple) else v for v in (cell["best"], cell["final"],
                                                                                     cell["diff"]))
                off += [(key, attack, diff)] if abs(best - final - diff) > 0.011 else []
    assert off == [("pgd_at", "cw-1000", 7.48)]  # the paper's own typo (50.11 - 43.63 = 6.48), also in Table 1


def test_cpu_amp_is_bfloat16_autocast_on_the_cpu_and_a_run_of_its_own(tiny_cfg):
    from memlib.runs import uses_amp

    assert not uses_amp(tiny_cfg(), "cpu") and uses_amp(tiny_cfg(cpu_amp=True), "cpu")
    assert not uses_amp(tiny_cfg(cpu_amp=True, amp=False), "cpu") and uses_amp(tiny_cfg(), "cuda")
    fp32, bf16 = train(tiny_cfg(epochs=1)), train(tiny_cfg(epochs=1, cpu_amp=True))
    assert fp32.run_dir != bf16.run_dir  # it changes the numbers, so it is part of the identity
    a, b = fp32.metrics[0]["train_loss"], bf16.metrics[0]["train_loss"]
    assert np.isfinite(b) and b != a and b == pytest.approx(a, rel=0.05)


def test_train_many_trains_a_run_after_the_runs_whose_checkpoints_it_needs(tiny_cfg):
    from memlib.train import train_many
    teacher = tiny_cfg(epochs=1)
    student = tiny_cfg(epochs=1, method="kd_swa", swa_start=1, kd_teacher=str(run_dir_for(teacher)[0] / "best.pt"))
    later = tiny_cfg(epochs=1, seed=3, init_from=str(run_dir_for(student)[0] / "final.pt"))
    results = train_many([later, student, teacher])  # listed before what they need
    assert [r.finished for r in results] == [True, True, True]
    assert results[2].run_dir == run_dir_for(teacher)[0] and (results[0].run_dir / "final.pt").is_file()
