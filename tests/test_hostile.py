"""Hostile inputs (issue 15, docs/hostile-inputs.md): each one stops with one line that names the file and what
to do, loses nothing that was written before, and leaves the run resumable once fixed."""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import yaml

from memlib import methods
from memlib.__main__ import main
from memlib.config import ConfigError, MemlibError, RunConfig, check_notebook_parameters
from memlib.data import CIFAR10_CLASSES, DataError, balanced_subset, data_digest
from memlib.evaluate import evaluate_run
from memlib.io import CheckpointError, atomic_write_text, load_checkpoint
from memlib.runs import read_metrics
from memlib.train import TrainingDiverged, _lock, train

from conftest import write_imagefolder

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def tiny_cfg(tiny_cfg):
    """conftest's tiny runs in NCHW: the memory format is beside the point here, and channels_last backward
    crashes (SIGSEGV) with the CPU build of torch 2.14.1 on some AMD EPYC machines."""
    return lambda **changes: tiny_cfg(**{"channels_last": False, **changes})


def _one_line(text: str) -> str:
    assert "\n" not in text.strip() and "Traceback" not in text, text
    return text


def _cli(capsys, *args) -> tuple[int, str]:
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err
    return rc, err


def _params(tmp_path: Path, cfg: RunConfig, **changes) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({**cfg.to_dict(), **changes}))
    return path


def _own_folder(tmp_path: Path, name: str = "mydata", per_class: int = 6, seed: int = 0) -> Path:
    return write_imagefolder(tmp_path / name, CIFAR10_CLASSES, {"train": per_class, "test": 3}, seed=seed)


def _all_finite(state) -> bool:
    if isinstance(state, torch.Tensor):
        return not state.is_floating_point() or bool(state.isfinite().all())
    if isinstance(state, dict):
        return all(_all_finite(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return all(_all_finite(v) for v in state)
    return True


# --- 1. train --force while the same run is training --------------------------------------------------------

def test_force_while_another_process_trains_deletes_nothing(tiny_cfg):
    cfg = tiny_cfg(epochs=2)
    run = train(cfg, until_epoch=1).run_dir
    before = sorted(p.name for p in run.iterdir())
    held = _lock(run)  # as if another process were training it
    try:
        with pytest.raises(MemlibError) as info:
            train(cfg, force=True)
        assert "being trained by another process" in _one_line(str(info.value))
    finally:
        held.close()
    assert sorted(p.name for p in run.iterdir()) == before
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    assert train(cfg, force=True).finished  # once the other process is gone, --force trains again


# --- 2. data identity by content ------------------------------------------------------------------------------

def test_other_data_under_the_same_folder_name_is_refused(tiny_cfg, tmp_path):
    folder = _own_folder(tmp_path / "a")
    cfg = tiny_cfg(data_path=str(folder), train_subset=40, test_subset=20, epochs=2)
    run = train(cfg, until_epoch=1).run_dir
    record = json.loads((run / "config.json").read_text())
    assert record["data_digest"] == data_digest(cfg) and record["data_digest"].startswith("files:")
    finished = train(tiny_cfg(data_path=str(folder), train_subset=40, test_subset=20, epochs=1,
                              out_dir=str(tmp_path / "done"))).run_dir

    # another data set moved in under the same name (more images per class): same source label, other content
    os.rename(folder, tmp_path / "a" / "old")
    _own_folder(tmp_path / "a", per_class=7, seed=1)
    assert data_digest(cfg) != record["data_digest"]
    for action in (lambda: train(cfg),  # resume from last.pt
                   lambda: train(tiny_cfg(data_path=str(folder), train_subset=40, test_subset=20, epochs=1,
                                          out_dir=str(tmp_path / "done"))),  # reuse of a finished run
                   lambda: evaluate_run(finished, ("natural",), log=lambda m: None)):
        with pytest.raises(DataError) as info:
            action()
        msg = _one_line(str(info.value))
        assert record["data_digest"] in msg and data_digest(cfg) in msg
    assert load_checkpoint(run / "last.pt")["epoch"] == 1  # nothing was overwritten
    assert json.loads((run / "config.json").read_text())["data_digest"] == record["data_digest"]

    # a record from before digests existed is accepted as it is
    old = json.loads((finished / "config.json").read_text())
    del old["data_digest"]
    (finished / "config.json").write_text(json.dumps(old))
    assert "natural" in evaluate_run(finished, ("natural",), checkpoints=("final",), log=lambda m: None)["final"]

    # the original data back: the run resumes
    os.rename(folder, tmp_path / "a" / "new")
    os.rename(tmp_path / "a" / "old", folder)
    assert train(cfg).finished


def test_torchvision_digest_is_of_the_files_and_cached(tmp_path):
    root = tmp_path / "tv"
    (root / "cifar-10-batches-py").mkdir(parents=True)
    for name in ("data_batch_1", "test_batch"):
        (root / "cifar-10-batches-py" / name).write_bytes(b"x" * 100)
    cfg = RunConfig(data_source="torchvision", data_dir=str(root), progress=False)
    first = data_digest(cfg)
    assert first.startswith("sha256:") and (root / "cache" / "digests.json").is_file()
    assert data_digest(cfg) == first
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(b"y" * 100)  # same size, other content
    assert data_digest(cfg) != first
    assert data_digest(RunConfig(data_source="torchvision", data_dir=str(tmp_path / "none"))) is None


def test_digest_of_the_offline_copy_is_fast(offline_cifar10):
    import time
    t0 = time.time()
    data_digest(RunConfig(data_source="imagefolder", data_path=str(offline_cifar10)))
    assert time.time() - t0 < 3


# --- 3. negative n -------------------------------------------------------------------------------------------

def test_negative_n_is_refused(tiny_cfg, capsys):
    with pytest.raises(DataError):
        balanced_subset(torch.arange(10) % 2, -5, 0)
    run = train(tiny_cfg(epochs=1)).run_dir
    with pytest.raises(ConfigError):
        evaluate_run(run, ("natural",), n=-5)
    rc, err = _cli(capsys, "evaluate", run, "--n", "-5")
    assert rc == 2 and "n must be >= 0" in _one_line(err)
    rc, err = _cli(capsys, "evaluate", run, "--batch-size", "0")
    assert rc == 2 and "batch_size >= 1" in _one_line(err)


# --- 4. non-finite weights or buffers never reach a checkpoint ----------------------------------------------

def test_nonfinite_batchnorm_statistics_are_never_saved(tiny_cfg, monkeypatch):
    real = methods.METHODS["standard"]

    def poisoned(model, x, y, idx, ctx):  # a finite loss whose forward pass left inf BatchNorm statistics
        step = real(model, x, y, idx, ctx)
        if ctx.epoch == 2:
            bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
            bn.running_var = torch.full_like(bn.running_var, math.inf)  # (not in place: autograd saved the old)
        return step
    monkeypatch.setitem(methods.METHODS, "standard", poisoned)
    cfg = tiny_cfg(method="standard")
    with pytest.raises(TrainingDiverged) as info:
        train(cfg)
    msg = _one_line(str(info.value))
    assert "non-finite weights or buffers" in msg and "running_var" in msg and "epoch 2" in msg
    run = next(Path(cfg.out_dir).iterdir())
    for name in ("last.pt", "best.pt"):
        state = load_checkpoint(run / name)
        assert state["epoch"] == 1 and _all_finite(state), name
    assert len(read_metrics(run)) == 1
    monkeypatch.setitem(methods.METHODS, "standard", real)  # fixed: the run resumes after epoch 1
    result = train(cfg)
    assert result.finished and _all_finite(load_checkpoint(result.run_dir / "final.pt"))


def test_a_saved_nonfinite_last_checkpoint_is_refused(tiny_cfg):
    cfg = tiny_cfg(epochs=2)
    run = train(cfg, until_epoch=1).run_dir
    state = load_checkpoint(run / "last.pt")
    next(v for k, v in state["model"].items() if k.endswith("running_var")).fill_(math.nan)
    torch.save(state, run / "last.pt")
    with pytest.raises(CheckpointError) as info:
        train(cfg)
    assert "non-finite" in _one_line(str(info.value))


# --- 5. files that gave tracebacks ---------------------------------------------------------------------------

def test_yaml_with_a_tab_names_line_and_column(tmp_path, capsys):
    path = tmp_path / "tab.yaml"
    path.write_text("epochs: 1\n\tsteps: 2\n")
    rc, err = _cli(capsys, "train", path)
    assert rc == 2 and "line 2, column 1" in _one_line(err) and "tabs" in err and str(path) in err


def test_non_utf8_yaml(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: café\n".encode("latin-1"))
    rc, err = _cli(capsys, "train", path)
    assert rc == 2 and "not UTF-8" in _one_line(err) and str(path) in err


def test_corrupt_config_json_is_one_line_and_the_run_resumes(tiny_cfg, tmp_path, capsys):
    cfg = tiny_cfg(epochs=2)
    run = train(cfg, until_epoch=1).run_dir
    (run / "config.json").write_text('{"run_id": "x", "conf')
    rc, err = _cli(capsys, "evaluate", run)
    assert rc == 2 and str(run / "config.json") in _one_line(err) and "damaged" in err
    rc, err = _cli(capsys, "train", _params(tmp_path, cfg))
    assert rc == 2 and str(run / "config.json") in _one_line(err) and "delete it" in err
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    (run / "config.json").unlink()  # what the message says to do
    result = train(cfg)
    assert result.finished and [m["epoch"] for m in result.metrics] == [1, 2]


def test_broken_image_names_the_file(tiny_cfg, tmp_path, capsys):
    folder = _own_folder(tmp_path / "b")
    broken = folder / "train" / "cat" / "0002.png"
    good = broken.read_bytes()
    broken.write_bytes(good[:40])  # truncated
    cfg = tiny_cfg(data_path=str(folder), train_subset=40, test_subset=20, epochs=1)
    rc, err = _cli(capsys, "train", _params(tmp_path, cfg))
    assert rc == 2 and str(broken) in _one_line(err) and "not a readable image" in err
    assert not Path(cfg.out_dir).exists()  # nothing was started
    broken.write_bytes(good)
    assert train(cfg).finished


def test_read_only_folder_is_one_line(tiny_cfg, tmp_path, capsys, monkeypatch):
    import memlib.io
    cfg = tiny_cfg(epochs=2)
    run = train(cfg, until_epoch=1).run_dir
    params = _params(tmp_path, cfg)

    def denied(*args, dir=None, **kw):  # what a read-only folder does (the tests may run as root)
        raise PermissionError(errno.EACCES, "Permission denied", str(dir))
    monkeypatch.setattr(memlib.io.tempfile, "mkstemp", denied)
    rc, err = _cli(capsys, "train", params)
    assert rc == 2 and "Permission denied" in _one_line(err) and "writable" in err and str(run) in err
    monkeypatch.undo()
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    assert train(cfg).finished


@pytest.mark.parametrize("key", ["out_dir", "data_dir"])
def test_out_dir_or_data_dir_that_is_a_file(tiny_cfg, tmp_path, capsys, key):
    (tmp_path / "a-file").write_text("not a folder")
    cfg = tiny_cfg(**{key: str(tmp_path / "a-file")}, epochs=1)
    rc, err = _cli(capsys, "train", _params(tmp_path, cfg))
    assert rc == 2 and f"{key} {tmp_path / 'a-file'} is a file, not a folder" in _one_line(err)
    assert (tmp_path / "a-file").read_text() == "not a folder"


def test_train_eval_subset_larger_than_the_training_examples_names_the_key(tiny_cfg):
    with pytest.raises(DataError, match="train_eval_subset=61 is larger than the training examples of the run"):
        train(tiny_cfg(epochs=1, train_subset=60, train_eval_subset=61))


def test_full_disk_keeps_every_file_and_the_run_resumes(tiny_cfg, tmp_path, capsys, monkeypatch):
    import memlib.io
    cfg = tiny_cfg(epochs=2)
    run = train(cfg, until_epoch=1).run_dir
    files = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(memlib.io.os, "fsync", full)
    rc, err = _cli(capsys, "train", _params(tmp_path, cfg))
    assert rc == 2 and "No space left on device" in _one_line(err) and "free some space" in err
    assert str(run) in err  # names the file it could not write
    monkeypatch.undo()
    assert not list(run.glob(".*.tmp"))  # no temporary file left behind
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"} == files
    result = train(cfg)
    assert result.finished and [m["epoch"] for m in result.metrics] == [1, 2]


def test_failed_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    import memlib.io
    path = tmp_path / "f.txt"
    atomic_write_text(path, "old")
    monkeypatch.setattr(memlib.io.os, "replace", lambda *a: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(OSError) as info:
        atomic_write_text(path, "new")
    assert info.value.filename == str(path)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


# --- 6. an empty YAML ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["", "\n\n", "# nothing but a comment\n"])
def test_empty_yaml_is_refused(tmp_path, capsys, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    rc, err = _cli(capsys, "train", path)
    assert rc == 2 and f"{path} is empty" in _one_line(err)


# --- 7. notebook parameters ----------------------------------------------------------------------------------

def _defaults(name: str) -> dict:
    from memlib.config import _notebook_declarations
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    ns: dict = {}
    exec("".join(cell["source"]), {}, ns)
    ns = {k: v for k, v in ns.items() if not k.startswith("_")}  # __annotations__
    assert list(ns) == _notebook_declarations(name)[0]
    return ns


NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("0*_*.ipynb"))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_notebook_checks_its_parameters_right_after_the_parameters_cell(name):
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    i = next(k for k, c in enumerate(code) if "parameters" in c["metadata"].get("tags", []))
    assert f'check_notebook_parameters(globals(), "{name}")' in "".join(code[i + 1]["source"])
    ipython = {"In": [], "Out": {}, "_": "", "__": "", "_i1": "", "_oh": {}, "get_ipython": print, "exit": 0,
               "quit": 0, "__name__": "__main__", "__builtins__": {}}
    for tier in ("smoke", "quick", "paper"):  # every committed parameter file passes
        values = yaml.safe_load((ROOT / "params" / name / f"{tier}.yaml").read_text()) or {}
        check_notebook_parameters({**ipython, **_defaults(name), **values, "tier": tier}, name)
    check_notebook_parameters({**ipython, **_defaults(name), "plt": os, "out": 1}, name)  # names of later cells


@pytest.mark.parametrize("bad, needle", [
    (dict(bogus=1), "unknown parameter(s) bogus"),
    (dict(eval_nn=3), "did you mean 'eval_n'"),
    (dict(eval_n=-5), "eval_n must be a finite number >= 0"),
    (dict(eval_n="abc"), "eval_n expects int; got 'abc'"),
    (dict(eval_n=True), "eval_n expects int"),
    (dict(eps_values="[0, 8]"), "give lists and dicts with -y"),
    (dict(interactive="no"), "interactive expects bool"),
    (dict(tier="nope"), "unknown tier 'nope'"),
    (dict(base=dict(epoch=3)), "base: unknown config key 'epoch'"),
    (dict(base=dict(eps=-1)), "base: eps must be in (0, 1]"),
])
def test_bad_notebook_parameters_are_one_line(bad, needle):
    with pytest.raises(ConfigError) as info:
        check_notebook_parameters({**_defaults("01_introduction"), **bad}, "01_introduction")
    assert needle in _one_line(str(info.value))


def test_float_parameter_takes_an_int_and_jobs_must_be_positive():
    check_notebook_parameters({**_defaults("05_robust_overfitting"), "loss_alpha": 2}, "05_robust_overfitting")
    with pytest.raises(ConfigError, match="jobs must be a finite number >= 1"):
        check_notebook_parameters({**_defaults("02_random_labels"), "jobs": 0}, "02_random_labels")


def test_papermill_stops_at_the_check_cell_before_any_compute(tmp_path, monkeypatch):
    import time

    import papermill as pm
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.time()
    with pytest.raises(pm.PapermillExecutionError) as info:
        pm.execute_notebook(str(ROOT / "notebooks" / "01_introduction.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters={"bogus": 1}, cwd=str(ROOT / "notebooks"), kernel_name="python3",
                            progress_bar=False, log_output=False)
    assert info.value.ename == "ConfigError" and "unknown parameter(s) bogus" in info.value.evalue
    assert time.time() - t0 < 60
    nb = json.loads((tmp_path / "out.ipynb").read_text())
    ran = [c for c in nb["cells"] if c["cell_type"] == "code" and c.get("execution_count")]
    assert "check_notebook_parameters" in "".join(ran[-1]["source"])  # the last cell that ran is the check


# --- more hostile inputs (docs/hostile-inputs.md) ---------------------------------------------------------------

@pytest.mark.parametrize("override, needle", [("seed=-1", "seed must be in [0, 2**62)"),
                                              ("data_seed=-1", "data_seed must be in [0, 2**62)"),
                                              (f"seed={2 ** 70}", "seed must be in [0, 2**62)")])
def test_seeds_out_of_range(tiny_cfg, tmp_path, capsys, override, needle):
    rc, err = _cli(capsys, "train", _params(tmp_path, tiny_cfg(epochs=1, noise_rate=0.5)), override)
    assert rc == 2 and needle in _one_line(err)


def test_duplicate_yaml_key_is_refused(tmp_path, capsys):
    path = tmp_path / "dup.yaml"
    path.write_text("epochs: 1\nsteps: 2\nepochs: 300\n")
    rc, err = _cli(capsys, "train", path)
    assert rc == 2 and "key 'epochs' given twice" in _one_line(err) and "line 3" in err


@pytest.mark.parametrize("args, needle", [(("--attacks", ""), "--attacks and --checkpoints need"),
                                          (("--checkpoints", " "), "--attacks and --checkpoints need")])
def test_evaluate_with_nothing_to_evaluate(tiny_cfg, capsys, args, needle):
    run = train(tiny_cfg(epochs=1)).run_dir
    rc, err = _cli(capsys, "evaluate", run, *args)
    assert rc == 2 and needle in _one_line(err)


def test_evaluate_unknown_device_and_reproduce_jobs_zero(tmp_path, capsys):
    with pytest.raises(SystemExit):  # argparse: usage and "invalid choice", no traceback
        main(["evaluate", str(tmp_path), "--device", "foo"])
    assert "invalid choice: 'foo'" in capsys.readouterr().err
    rc, err = _cli(capsys, "reproduce", "--tier", "smoke", "--jobs", "0")  # used to loop for ever
    assert rc == 2 and "--jobs must be >= 1" in _one_line(err)


def test_damaged_status_and_metrics_of_a_finished_run(tiny_cfg):
    cfg = tiny_cfg(epochs=1)
    run = train(cfg).run_dir
    metrics = (run / "metrics.jsonl").read_text()
    (run / "status.json").write_text("{")  # damaged: the run resumes after its last epoch and writes it again
    result = train(cfg)
    assert result.finished and not result.reused and json.loads((run / "status.json").read_text())["finished"]
    (run / "metrics.jsonl").write_text(metrics[: len(metrics) // 2])
    with pytest.raises(MemlibError) as info:
        train(cfg)
    assert "metrics.jsonl is damaged" in _one_line(str(info.value))
    (run / "status.json").unlink()  # what the message says to do
    assert train(cfg).finished and (run / "metrics.jsonl").read_text() == metrics


def test_empty_class_folder_is_refused(tiny_cfg, tmp_path):
    folder = _own_folder(tmp_path / "e")
    for f in (folder / "train" / "cat").iterdir():
        f.unlink()
    with pytest.raises(DataError) as info:
        train(tiny_cfg(data_path=str(folder), train_subset=0, test_subset=0, epochs=1))
    assert str(folder / "train" / "cat") in _one_line(str(info.value)) and "holds no images" in str(info.value)


@pytest.mark.parametrize("text, needle", [("", "is empty"), ("# only a comment\n", "is empty"),
                                          ("jobs: 1\njobs: 2\n", "duplicate")])
def test_empty_or_duplicate_notebook_params_are_refused(tmp_path, text, needle):
    from memlib.reproduce import load_params

    root = Path(__file__).resolve().parent.parent
    project = tmp_path / "project"
    (project / "params" / "02_random_labels").mkdir(parents=True)
    (project / "notebooks").mkdir()
    (project / "notebooks" / "02_random_labels.ipynb").write_bytes(
        (root / "notebooks" / "02_random_labels.ipynb").read_bytes())
    (project / "params" / "02_random_labels" / "paper.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_params(project, "02_random_labels", "paper")
    assert needle in str(info.value) and "\n" not in str(info.value)
