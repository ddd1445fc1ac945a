"""Records (a finished run's metrics without its weights, as the quick tier is committed): recognized as such,
rendered from without training, trained again only when their weights are needed, and then equal to the record."""

from __future__ import annotations

import json
import shutil

import pytest

import memlib.train  # noqa: F401  (registers the retrainer)
from memlib.config import ConfigError
from memlib.evaluate import evaluate_run, load_weights
from memlib.plan import plan_notebook
from memlib.runs import WeightsUnavailable, ensure_weights, read_metrics, retraining, run_state
from memlib.train import train


def _as_record(run_dir):
    """What a fresh clone of the project holds for a finished run: everything but the weights."""
    for name in ("best.pt", "final.pt", "last.pt"):
        (run_dir / name).unlink()


def test_run_states(tiny_cfg):
    cfg = tiny_cfg(epochs=2)
    result = train(cfg, until_epoch=1)
    assert run_state(result.run_dir) == ("stopped", 1)
    result = train(cfg)
    assert run_state(result.run_dir) == ("finished", 2)
    _as_record(result.run_dir)
    assert run_state(result.run_dir) == ("record", 2)
    shutil.rmtree(result.run_dir)
    assert run_state(result.run_dir) == ("missing", 0)


def test_a_record_is_reused_for_its_metrics_and_trained_again_for_its_weights(tiny_cfg, monkeypatch):
    cfg = tiny_cfg(epochs=2)
    run_dir = train(cfg).run_dir
    evaluate_run(run_dir, ("natural",), log=lambda m: None)
    record = {n: (run_dir / n).read_bytes() for n in ("config.json", "metrics.jsonl", "status.json", "eval.json")}
    _as_record(run_dir)

    again = train(cfg)  # a record is a finished run for its metrics: nothing is trained
    assert again.reused and not (run_dir / "final.pt").exists()
    cached = evaluate_run(run_dir, ("natural",), log=lambda m: None)  # cached results need no weights
    assert not (run_dir / "final.pt").exists() and cached["final"]["natural"] >= 0

    monkeypatch.setenv("MEMLIB_RECORDS_ONLY", "1")
    with pytest.raises(WeightsUnavailable) as info:
        load_weights(run_dir, "final")
    assert "reproduce" in str(info.value) and "\n" not in str(info.value)
    monkeypatch.delenv("MEMLIB_RECORDS_ONLY")

    model, state = load_weights(run_dir, "final")  # trained again, deterministic on a CPU
    assert state["epoch"] == 2 and run_state(run_dir)[0] == "finished"
    for name, data in record.items():  # equal metrics: the record's bytes and its cached analyses stay
        assert (run_dir / name).read_bytes() == data, name
    assert not (run_dir / "record").exists()


def test_a_record_whose_retraining_differs_loses_its_cached_analyses(tiny_cfg):
    cfg = tiny_cfg(epochs=1)
    run_dir = train(cfg).run_dir
    evaluate_run(run_dir, ("natural",), log=lambda m: None)
    _as_record(run_dir)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    changed = {**json.loads(lines[0]), "train_loss": 99.0}  # as if trained by another torch
    (run_dir / "metrics.jsonl").write_text(json.dumps(changed) + "\n")
    ensure_weights(run_dir, "final", log=lambda m: None)
    assert not (run_dir / "eval.json").exists()  # computed on weights that are gone
    assert json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])["train_loss"] != 99.0


def test_an_interrupted_retraining_resumes_and_still_compares_with_the_record(tiny_cfg, monkeypatch):
    cfg = tiny_cfg(epochs=2)
    run_dir = train(cfg).run_dir
    record = (run_dir / "metrics.jsonl").read_bytes()
    _as_record(run_dir)
    real_train = memlib.train.train
    monkeypatch.setattr(memlib.train, "train", lambda c, **kw: real_train(c, until_epoch=1, **kw))
    ensure_weights(run_dir, "final", log=lambda m: None)  # stops after epoch 1, as if killed
    assert (run_dir / "record" / "metrics.jsonl").read_bytes() == record
    assert run_state(run_dir) == ("record", 2) and retraining(run_dir)  # still a record, its own metrics stand
    assert train(cfg).reused and len(read_metrics(run_dir)) == 2  # reused for its metrics, as before
    monkeypatch.setenv("MEMLIB_RECORDS_ONLY", "1")
    with pytest.raises(WeightsUnavailable):  # best.pt of epoch 1 is not the record's best: never used
        load_weights(run_dir, "best")
    monkeypatch.delenv("MEMLIB_RECORDS_ONLY")
    monkeypatch.setattr(memlib.train, "train", real_train)
    ensure_weights(run_dir, "final", log=lambda m: None)
    assert run_state(run_dir)[0] == "finished" and (run_dir / "metrics.jsonl").read_bytes() == record


def test_records_only_never_trains_nor_deletes(tiny_cfg, monkeypatch):
    cfg = tiny_cfg(epochs=1)
    run_dir = train(cfg).run_dir
    _as_record(run_dir)
    files = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    monkeypatch.setenv("MEMLIB_RECORDS_ONLY", "1")
    with pytest.raises(WeightsUnavailable):
        train(tiny_cfg(epochs=1, seed=5))
    with pytest.raises(WeightsUnavailable):  # `render --force` must not wipe the records it renders from
        train(cfg, force=True)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == files


def test_the_plan_says_what_is_reused_rendered_and_trained(tiny_cfg, tmp_path):
    project = tmp_path / "project"
    runs = project / "outputs" / "smoke" / "runs"
    a = train(tiny_cfg(epochs=1, out_dir=str(runs))).run_dir
    b = train(tiny_cfg(epochs=1, seed=1, out_dir=str(runs))).run_dir
    c = train(tiny_cfg(epochs=1, seed=2, out_dir=str(runs))).run_dir
    _as_record(b)
    _as_record(c)
    rel = [str(p.relative_to(project)) for p in (a, b, c)]
    manifest = {"notebook": "nb", "runs": rel, "tables": [], "figures": []}
    for folder, content in (("manifest", manifest), ("status", {"ok": True, "seconds": 5.0, "weights": [rel[2]]})):
        (project / "outputs" / "smoke" / folder).mkdir(parents=True)
        (project / "outputs" / "smoke" / folder / "nb.json").write_text(json.dumps(content))
    plan = plan_notebook(project, "smoke", "nb")
    assert [(r.state, r.action) for r in plan.runs] == [("finished", "reuse"), ("record", "render"),
                                                        ("record", "train")]
    assert plan.runs[2].recorded_seconds > 0
    assert [r.action for r in plan_notebook(project, "smoke", "nb", records_only=True).runs][2] == "render"
    assert not plan_notebook(project, "smoke", "other").known


def test_a_record_trained_from_a_retrained_record_that_changed_is_trained_again(tiny_cfg):
    teacher_cfg = tiny_cfg(epochs=1)
    teacher = train(teacher_cfg).run_dir
    student_cfg = tiny_cfg(epochs=1, method="kd_swa", kd_teacher=str(teacher / "best.pt"), swa_start=1)
    student = train(student_cfg).run_dir
    evaluate_run(student, ("natural",), log=lambda m: None)
    for run in (teacher, student):
        _as_record(run)
    lines = (teacher / "metrics.jsonl").read_text().splitlines()
    (teacher / "metrics.jsonl").write_text(json.dumps({**json.loads(lines[0]), "train_loss": 99.0}) + "\n")
    record = (student / "metrics.jsonl").read_bytes()
    ensure_weights(teacher, "best", log=lambda m: None)  # differs from its record: the student's record is stale
    assert run_state(student)[0] == "finished"  # so the student was trained again, from the new teacher; here
    assert (student / "metrics.jsonl").read_bytes() == record  # that teacher's weights are the old ones after all
    unrelated = train(tiny_cfg(epochs=1, seed=3)).run_dir  # a run that does not use the teacher is left alone
    assert run_state(unrelated)[0] == "finished"


def test_a_record_another_process_is_training_is_waited_for(tiny_cfg):
    import threading
    import time

    from memlib.train import _lock

    cfg = tiny_cfg(epochs=1)
    run_dir = train(cfg).run_dir
    _as_record(run_dir)
    held = _lock(run_dir)  # as if another notebook were training it (flock: another open file conflicts)
    threading.Timer(1.5, held.close).start()
    t0 = time.time()
    ensure_weights(run_dir, "final", log=lambda m: None)  # waits instead of failing on the lock
    assert time.time() - t0 >= 1.4 and run_state(run_dir)[0] == "finished"


def test_a_render_evaluates_only_what_it_can(tiny_cfg, monkeypatch):
    """Rendering from records (`memlib render`) a table whose evaluation needs weights that are not here: with
    ``missing_weights="skip"`` the kept results are returned, the missing ones are None and nothing is cached or
    trained; by default it stops with WeightsUnavailable; a bad value is one line."""
    from memlib.present import not_evaluated

    run_dir = train(tiny_cfg(epochs=2)).run_dir
    evaluate_run(run_dir, ("natural",), log=lambda m: None)
    _as_record(run_dir)
    kept = (run_dir / "eval.json").read_bytes()
    monkeypatch.setenv("MEMLIB_RECORDS_ONLY", "1")
    result = evaluate_run(run_dir, ("natural", "pgd-2"), missing_weights="skip", log=lambda m: None)
    assert result["final"]["natural"] >= 0 and result["final"]["epoch"] == 2
    assert result["final"]["pgd-2"] is None and result["best"]["pgd-2"] is None
    assert (run_dir / "eval.json").read_bytes() == kept and run_state(run_dir)[0] == "record"
    note = not_evaluated({"a": result}, {"a": run_dir}, 0, "python -m memlib reproduce")
    assert run_dir.name in note and "1 run(s)" in note
    assert not_evaluated({"a": evaluate_run(run_dir, ("natural",), missing_weights="skip", log=lambda m: None)},
                         {"a": run_dir}, 0, "x") == ""
    with pytest.raises(WeightsUnavailable):
        evaluate_run(run_dir, ("pgd-2",), log=lambda m: None)
    with pytest.raises(ConfigError, match="missing_weights"):
        evaluate_run(run_dir, ("natural",), missing_weights="train", log=lambda m: None)


def test_a_whole_render_tells_the_plan_which_weights_are_still_needed(tmp_path):
    """The status the plan reads lists the runs whose weights a notebook needs: after a render that ran to its
    end, exactly those it asked for (what it found cached or committed is no longer listed); after one that
    stopped for weights, those too, beside the ones listed before."""
    from memlib.io import atomic_write_json, read_json
    from memlib.reproduce import WEIGHTS_FILE, _keep_good

    out = tmp_path / "outputs" / "quick"
    main = out / "status" / "nb.json"

    def render(asked, error=None):
        stage = tmp_path / "stage"
        stage.mkdir(exist_ok=True)
        atomic_write_json(stage / WEIGHTS_FILE, asked)
        (stage / "nb.ipynb").write_text("{}")
        status = {"ok": error is None, "error": error, "started": "now"}
        _keep_good(tmp_path, out, "nb", stage, status, records_only=True)
        return read_json(main)["weights"]

    atomic_write_json(main, {"ok": True, "weights": ["runs/a", "runs/b"]})
    assert render(["runs/b"]) == ["runs/b"]
    assert render(["runs/c"], error="WeightsUnavailable: the weights of run c") == ["runs/b", "runs/c"]
    assert render([]) == []
