"""Runs that feed the analysis notebooks: weights kept along training (snapshot_epochs), runs started from
another run's weights (init_from), cached measurements (Run.cached) and the table built from them."""

from __future__ import annotations

import json

import pytest
import torch

from memlib.config import ConfigError, RunConfig
from memlib.evaluate import load_weights
from memlib.io import load_checkpoint, save_checkpoint
from memlib.report import build_measures
from memlib.runs import Run, make_model
from memlib.train import snapshot_path, train


def test_snapshots_hold_the_weights_of_their_epochs(tiny_cfg):
    cfg = tiny_cfg(snapshot_epochs=[0, 1, 3])
    run = train(cfg).run_dir
    assert sorted(p.name for p in run.glob("epoch_*.pt")) == ["epoch_000.pt", "epoch_001.pt", "epoch_003.pt"]
    # epoch 0 is the initialization: the model built from the seed, before any step
    torch.manual_seed(cfg.seed)
    init = make_model(cfg).state_dict()
    snap0 = load_checkpoint(snapshot_path(run, 0))["model"]
    assert all(torch.equal(init[k], snap0[k]) for k in init)
    # the last snapshot equals final.pt; the first trained one differs from the initialization
    final, snap3 = load_checkpoint(run / "final.pt")["model"], load_checkpoint(snapshot_path(run, 3))["model"]
    assert all(torch.equal(final[k], snap3[k]) for k in final)
    snap1 = load_checkpoint(snapshot_path(run, 1))
    assert snap1["epoch"] == 1 and not all(torch.equal(snap1["model"][k], snap0[k]) for k in snap0)
    model, state = load_weights(run, "epoch_001")
    assert state["epoch"] == 1
    # snapshots change nothing that is computed (same metrics as a run without them), but are part of the identity
    plain = train(tiny_cfg()).run_dir
    strip = lambda run_dir: [{k: v for k, v in json.loads(line).items() if not k.startswith("time")}  # noqa: E731
                             for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert plain != run and strip(plain) == strip(run)


def test_snapshot_epochs_outside_the_run_are_rejected(tiny_cfg):
    with pytest.raises(ConfigError, match="snapshot_epochs"):
        tiny_cfg(snapshot_epochs=[4])


def test_init_from_starts_at_the_given_weights(tiny_cfg, tmp_path):
    source = train(tiny_cfg(epochs=2, noise_rate=1.0)).run_dir
    cfg = tiny_cfg(epochs=1, init_from=str(source / "final.pt"), snapshot_epochs=[0])
    run = train(cfg).run_dir
    start, pre = load_checkpoint(snapshot_path(run, 0))["model"], load_checkpoint(source / "final.pt")["model"]
    assert all(torch.equal(start[k], pre[k]) for k in pre)
    # the identity names the source run and file, not where the project lives
    assert cfg.identity("x")["init_from"] == f"{source.name}/final.pt"
    record = json.loads((run / "config.json").read_text())
    assert record["identity"]["init_from"] == f"{source.name}/final.pt"


def test_init_from_errors_are_one_line(tiny_cfg, tmp_path):
    with pytest.raises(Exception, match="init_from: no checkpoint"):
        train(tiny_cfg(init_from=str(tmp_path / "missing.pt")))
    other = train(tiny_cfg(epochs=1, width=0.125)).run_dir
    with pytest.raises(Exception, match="another architecture"):
        train(tiny_cfg(epochs=1, init_from=str(other / "final.pt")))


def test_force_removes_snapshots_and_cached_analyses(tiny_cfg):
    cfg = tiny_cfg(epochs=1, snapshot_epochs=[1])
    run = train(cfg).run_dir
    Run(run).cached("analysis.json", "k", lambda: 1.0)
    train(cfg, force=True)
    assert not (run / "analysis.json").exists() and snapshot_path(run, 1).is_file()


def test_run_cache_computes_once_per_key_and_weights_and_keeps_other_keys(tiny_cfg):
    calls = []

    def compute(value):
        calls.append(value)
        return value

    run = Run(train(tiny_cfg(epochs=1)).run_dir)
    path = run.dir / "m.json"
    assert run.cached("m.json", "a", lambda: compute(1)) == 1
    assert run.cached("m.json", "a", lambda: compute(2)) == 1
    assert run.cached("m.json", "b", lambda: compute([3, 4])) == [3, 4]
    assert calls == [1, [3, 4]] and json.loads(path.read_text()) == {"a": 1, "b": [3, 4]}
    # a result of the weights: kept with their digest, reused while they are the same file or absent (a record)
    first = run.cached("m.json", "w", lambda: compute({"v": 5}), weights="final")
    assert first == {"v": 5, "checkpoint_sha256": run.weights_digest("final")}
    assert run.cached("m.json", "w", lambda: compute({"v": 6}), weights="final") == first
    state = load_checkpoint(run.checkpoint("final"))
    state["model"] = {k: v * 2 if v.is_floating_point() else v for k, v in state["model"].items()}
    save_checkpoint(run.checkpoint("final"), state)  # retrained: other weights
    assert run.cached("m.json", "w", lambda: compute({"v": 7}), weights="final")["v"] == 7
    run.checkpoint("final").rename(run.dir / "final.away")
    assert run.cached("m.json", "w", lambda: compute({"v": 8}), weights="final")["v"] == 7
    assert calls == [1, [3, 4], {"v": 5}, {"v": 7}] and run.cached_value("m.json", "b") == [3, 4]


def test_measures_table_reads_numbers_from_run_files(tiny_cfg, tmp_path):
    run = train(tiny_cfg(epochs=1)).run_dir
    Run(run).cached("m.json", "summary|x", lambda: 0.123456)
    project = run.parents[1]
    table = build_measures(project, [dict(label="x", run=str(run.relative_to(project)),
                                          file="m.json", key="summary|x", paper="0.85"),
                                     dict(label="absent", run=str(run.relative_to(project)), file="m.json",
                                          key="nope")], title="t", setting="s")
    assert table["rows"][0] == ["x", "0.123", "0.85"] and table["rows"][1][1] == "–"
    assert table["csv_rows"][0][1] == pytest.approx(0.123456)


def test_snapshot_epochs_round_trip_through_yaml_values():
    assert RunConfig(snapshot_epochs="3", epochs=5).snapshot_epochs == [3]
    assert RunConfig(snapshot_epochs=[0, 1.0], epochs=5).snapshot_epochs == [0, 1]
