"""Committed weights: a checkpoint exported as safetensors serves a record exactly as its .pt would (same model,
same cached results, nothing retrained, nothing unpickled), a file of another run is refused, and the committed
set under outputs/quick is whole, listed by sha256, small, and shows trained models whose predictions change
with eps (what 01's explorer shows a student)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import memlib.train  # noqa: F401  (registers the retrainer)
from memlib import runs as R
from memlib import showcase
from memlib.attacks import attack
from memlib.evaluate import evaluate_run
from memlib.io import CheckpointError, file_digest, load_checkpoint, save_weights_file
from memlib.runs import Run, run_state
from memlib.train import train

ROOT = Path(__file__).resolve().parent.parent


def _never_retrain(run_dir, log=None):
    raise AssertionError(f"{run_dir} was trained again although its weights are committed")


def test_committed_weights_stand_in_for_the_checkpoint(tiny_cfg, monkeypatch, one_thread):
    run_dir = train(tiny_cfg(epochs=2)).run_dir
    cached = evaluate_run(run_dir, ("natural",), log=lambda m: None)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        want = Run(run_dir).load("final")[0](x)
    digest = file_digest(run_dir / "final.pt")
    save_weights_file(run_dir / "final.safetensors", load_checkpoint(run_dir / "final.pt"), digest)
    for name in ("best.pt", "final.pt", "last.pt"):  # a fresh clone: the record and the committed weights
        (run_dir / name).unlink()
    assert run_state(run_dir)[0] == "record"

    monkeypatch.setattr(R, "_retrain", _never_retrain)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("unpickled a checkpoint"))
    model, state = Run(run_dir).load("final")
    with torch.no_grad():
        assert torch.equal(model(x), want)
    assert state["epoch"] == 2
    assert Run(run_dir).weights_digest("final") == digest  # results cached on the .pt stay valid
    assert evaluate_run(run_dir, ("natural",), checkpoints=("final",),
                        log=lambda m: None)["final"] == cached["final"]


def test_weights_of_another_run_are_refused(tiny_cfg, one_thread):
    a = train(tiny_cfg(epochs=1)).run_dir
    b = train(tiny_cfg(epochs=1, seed=3)).run_dir
    save_weights_file(b / "final.safetensors", load_checkpoint(a / "final.pt"), file_digest(a / "final.pt"))
    (b / "final.pt").unlink()
    with pytest.raises(CheckpointError) as info:
        Run(b).load("final")
    assert "belongs to run" in str(info.value) and "\n" not in str(info.value)


def test_the_committed_weights_are_whole_listed_and_small():
    assert showcase.check(ROOT) == []
    listed = (ROOT / "outputs" / showcase.TIER / showcase.SUMS).read_text().splitlines()
    wanted = {(d.relative_to(ROOT / "outputs" / showcase.TIER), w) for _, _, d, w in showcase.committed_runs(ROOT)}
    assert {(Path(line.split("  ", 1)[1]).parent, Path(line).stem) for line in listed} == wanted


def test_the_intro_explorer_shows_trained_models_whose_predictions_change_with_eps(one_thread):
    shown = showcase.explorer_models(ROOT, "01_introduction", "smoke", {}, 2)
    assert set(shown.models) == {"Standard training", "PGD-AT"}, shown.note
    assert "quick tier's trained" in shown.note and "% natural" in shown.note
    test = Run(showcase.committed_runs(ROOT)[0][2]).test_set()
    x, y = test.images[:64].float() / 255, test.labels[:64]
    for label, model in shown.models.items():
        with torch.no_grad():
            clean = model(x).argmax(1)
        torch.manual_seed(0)
        adv = attack(model, x, y, f"pgd-{shown.steps}", eps=16 / 255, alpha=2.5 * 16 / 255 / shown.steps)
        with torch.no_grad():
            attacked = model(adv).argmax(1)
        assert (clean == y).float().mean() > 0.2, label  # trained: well above chance (10%)
        assert (attacked != clean).any(), label  # the explorer's prediction moves with eps


def test_without_committed_weights_the_explorer_says_it_shows_the_tiers_own(tmp_path):
    own = {"Standard training": torch.nn.Identity()}
    shown = showcase.explorer_models(tmp_path, "07_baselines", "smoke", own, 2)
    assert shown.models is own and "not here" in shown.note and "export-weights" in shown.note


def test_smoke_curve_explorers_draw_the_committed_quick_records(tmp_path):
    """02, 06 and 07's learning-curve explorers, in the smoke tier, draw the quick tier's committed records (all of
    the notebook's runs, with a note); in other tiers, or where a quick record is missing, the tier's own."""
    own = {"k": tmp_path / "own"}
    shown = showcase.explorer_runs(ROOT, "02_random_labels", "smoke", own, {})
    assert shown.note.startswith("Explorer runs: the quick tier's committed records") and shown.runs is not own
    keys = [k for k in shown.runs if k[0] == "noise"]
    assert keys and all(run_state(shown.runs[k])[0] in ("finished", "record") for k in keys)
    assert all(Run(shown.runs[k]).metrics[-1]["epoch"] == shown.configs[k].epochs for k in keys)
    assert showcase.explorer_runs(ROOT, "02_random_labels", "quick", own, {}) == showcase.ShownRuns(own, {}, "")
    (tmp_path / "params").symlink_to(ROOT / "params")  # the quick tier declared, none of its records here
    assert showcase.explorer_runs(tmp_path, "02_random_labels", "smoke", own, {}).runs is own


def test_the_smoke_hard_example_explorer_shows_the_committed_quick_model(tmp_path, one_thread):
    """05's explorer outside the quick tier: the committed quick PGD-AT model with the losses kept beside the
    records (nothing computed, nothing trained), ranked as kept; without them here, the tier's own with a note."""
    own = object()
    hard, second, names, note = showcase.explorer_hard_examples(ROOT, "smoke", own, None, ("a", "b"))
    assert hard is not own and note.startswith("Explorer: the quick tier's trained PGD-AT model"), note
    assert len(second) == len(hard.losses) == len(hard.ranking) and names == ("seed 0", "seed 1")
    assert float(hard.losses[hard.ranking[0]]) == float(hard.losses.max())
    x, x_adv, y, p_nat, _ = hard.view([len(hard.ranking) - 1])  # the easiest example: the model fits it
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6 and int(p_nat.argmax()) == int(y[0])
    (tmp_path / "params").symlink_to(ROOT / "params")
    got = showcase.explorer_hard_examples(tmp_path, "smoke", own, None, ("a", "b"))
    assert got[0] is own and "not here" in got[3]
    assert showcase.explorer_hard_examples(ROOT, "quick", own, None, ("a", "b")) == (own, None, ("a", "b"), "")


def test_export_writes_keeps_and_refuses(tiny_cfg, tmp_path, monkeypatch, one_thread):
    """`memlib export-weights`: safetensors from the trained checkpoint and their sha256 list; exported weights
    whose checkpoint is not here any more are kept as they are; neither here, or too many bytes: one line."""
    from memlib.config import ConfigError

    project = tmp_path
    run_dir = train(tiny_cfg(epochs=1, out_dir=str(project / "outputs" / "quick" / "runs"))).run_dir
    monkeypatch.setattr(showcase, "committed_runs", lambda p, notebooks=None: [("nb", "k", run_dir, "final")])
    sums = showcase.export(project, log=lambda m: None)
    target = run_dir / "final.safetensors"
    listed = sums.read_text()
    assert target.is_file() and listed.split()[0] == file_digest(target)
    for name in ("best.pt", "final.pt", "last.pt"):
        (run_dir / name).unlink()
    assert showcase.export(project, log=lambda m: None).read_text() == listed  # kept, the same bytes
    monkeypatch.setattr(showcase, "LIMIT_BYTES", 10)
    with pytest.raises(ConfigError, match="more than"):
        showcase.export(project, log=lambda m: None)
    target.unlink()
    with pytest.raises(ConfigError, match="has no final.pt here"):
        showcase.export(project, log=lambda m: None)


def test_exported_weights_are_the_same_bytes_in_every_process(tmp_path):
    """safetensors writes its metadata in a hash map's order, which changes between processes; the exported
    file's header is written sorted, so exporting the same checkpoint again gives the same bytes."""
    import subprocess
    import sys

    code = ("import sys, torch; from memlib.io import save_weights_file, load_weights_file; torch.manual_seed(0); "
            "save_weights_file(sys.argv[1], {'model': {'a.weight': torch.randn(3, 4), 'b.bias': torch.randn(5)}, "
            "'run_id': 'r', 'epoch': 2}, 'abc'); print(sorted(load_weights_file(sys.argv[1])['model']))")
    digests = set()
    for i in range(4):
        path = tmp_path / f"w{i}.safetensors"
        out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=ROOT)
        assert out.returncode == 0 and "a.weight" in out.stdout, out.stderr
        digests.add(file_digest(path))
    assert len(digests) == 1


def test_live_explorers_say_they_show_the_tiers_own_models():
    """03's and 04's explorers compute from checkpoints that are not committed: in the smoke tier a note says so
    and how to see trained ones; in the quick tier nothing is said."""
    for notebook in ("03_convergence", "04_generalization"):
        note = showcase.own_models_note(notebook, "smoke")
        assert note.startswith("Explorer models: this smoke tier's own") and notebook in note
        assert showcase.own_models_note(notebook, "quick") == ""
        assert f'showcase.own_models_note("{notebook}", tier)' in (ROOT / "notebooks" / f"{notebook}.py").read_text()
    assert showcase.own_models_note("02_random_labels", "smoke") == ""
