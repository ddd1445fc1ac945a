"""Notebooks and the batch: Jupytext pairs in sync, parameter files valid, every notebook executes with its
smoke parameters through papermill and writes the tables and figures it promises, failures are reported."""

from __future__ import annotations

import json
from pathlib import Path

import jupytext
import nbformat
import pytest

import memlib
from memlib.config import ConfigError
from memlib.report import TIERS, rebuild_table
from memlib.reproduce import load_params, notebook_parameters, run_batch

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))

# What each notebook promises in the smoke tier (tables, figures).
PROMISED = {
    "01_introduction": ((), ("intro_accuracy", "intro_eps_explorer")),
    "02_random_labels": (("fig2_final_accuracy", "fig2c_gap_vs_noise", "table_a1"),
                         ("fig2ab_learning_curves", "fig2c_gap_vs_noise", "figA6_A7_noise_curves")),
    "06_mitigation": (("table1a_cifar10",), ("fig8_learning_curves_cifar10",)),
    "07_baselines": (("table2", "table_c1", "table_c2"), ("baseline_schedules", "table2_learning_curves")),
    "04_generalization": (("fig6_complexity", "figA10_final_accuracy"),
                          ("fig6_complexity_vs_gap", "fig6_weight_landscape", "figA10_init_curves")),
    "05_robust_overfitting": (("fig7b_C1_robust_overfitting_by_eps", "fig7c_C2_loss_consistency"),
                              ("fig7a_pgd_at_curves", "fig7b_C1_eps_sweep", "fig7c_C2_adversarial_losses",
                               "figC3_hardest_examples")),
    "03_convergence": (("sec32_convergence", "fig5_final_accuracy", "appA2_training_configs"),
                       ("fig3_gradient_norms", "fig4a_A8_gradient_change", "fig4b_successive_cosine",
                        "fig5_eq6_random_labels", "figA9_noisy_gradients")),
}


def test_every_notebook_is_a_synced_jupytext_pair():
    assert NOTEBOOKS, "no notebooks"
    for name in NOTEBOOKS:
        py = ROOT / "notebooks" / f"{name}.py"
        assert py.is_file(), f"{name}.ipynb has no .py pair"
        code = lambda nb: [c.source.strip() for c in nb.cells if c.cell_type == "code"]  # noqa: E731
        assert code(jupytext.read(ROOT / "notebooks" / f"{name}.ipynb")) == code(jupytext.read(py)), \
            f"{name}: .ipynb and .py differ; run jupytext --sync notebooks/{name}.py"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_parameters_cell_and_all_tiers(name):
    params = notebook_parameters(ROOT / "notebooks" / f"{name}.ipynb")
    assert {"tier", "interactive", "force"} <= params
    for tier in TIERS:
        assert (ROOT / "params" / name / f"{tier}.yaml").is_file(), f"params/{name}/{tier}.yaml missing"
        values = load_params(ROOT, name, tier)  # unknown keys and invalid run configs raise
        assert "tier" not in values and "interactive" not in values


def _tiny_project(tmp_path: Path, cells: list[str]) -> Path:
    (tmp_path / "memlib").mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("tier = 'smoke'\ninteractive = True\nforce = False\nvalue = 1")]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.cells += [nbformat.v4.new_code_cell(src) for src in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    (tmp_path / "notebooks").mkdir()
    for name in ("good", "bad"):
        nbformat.write(nb, tmp_path / "notebooks" / f"{name}.ipynb")
        (tmp_path / "params" / name).mkdir(parents=True)
    (tmp_path / "params" / "good" / "smoke.yaml").write_text("value: 2\n")
    (tmp_path / "params" / "bad" / "smoke.yaml").write_text("value: 0\n")
    return tmp_path


def test_batch_reports_a_failing_notebook_and_runs_the_rest(tmp_path):
    project = _tiny_project(tmp_path, ["assert value, 'value must not be zero'", "print(10 // value)"])
    report, _ = run_batch("smoke", executor="local", project=project, log=lambda m: None)  # submitit's local executor
    text = report.read_text()
    status = {p.stem: json.loads(p.read_text()) for p in (project / "outputs/smoke/status").glob("*.json")}
    assert status["good"]["ok"] and not status["bad"]["ok"]
    assert status["good"]["code_version"].startswith(memlib.__version__)  # which code computed the outputs
    assert "AssertionError" in status["bad"]["error"] and "value must not be zero" in status["bad"]["error"]
    assert "**FAILED**" in text and "value must not be zero" in text
    executed = nbformat.read(project / "outputs/smoke/notebooks/good.ipynb", as_version=4)
    assert any("5" in "".join(o.get("text", "")) for c in executed.cells for o in c.get("outputs", []))


def test_unknown_notebook_parameter_is_rejected_before_running(tmp_path):
    project = _tiny_project(tmp_path, ["print(value)"])
    (project / "params" / "good" / "smoke.yaml").write_text("valeu: 2\n")
    with pytest.raises(ConfigError) as info:
        run_batch("smoke", executor="inline", project=project, log=lambda m: None)
    assert "unknown parameter(s) valeu" in str(info.value) and "\n" not in str(info.value)
    assert not (project / "outputs/smoke/status").exists()


def test_smoke_tier_writes_every_promised_table_and_figure():
    """CI's end-to-end check: every notebook, smoke parameters, papermill, REPORT.md."""
    report, _ = run_batch("smoke", executor="inline", project=ROOT, log=print)
    out = ROOT / "outputs" / "smoke"
    text = report.read_text()
    for name in NOTEBOOKS:
        status = json.loads((out / "status" / f"{name}.json").read_text())
        assert status["ok"], f"{name}: {status['error']}"
        tables, figures = PROMISED.get(name, ((), ()))
        manifest = json.loads((out / "manifest" / f"{name}.json").read_text())
        assert {t["name"] for t in manifest["tables"]} >= set(tables), name
        assert {f["name"] for f in manifest["figures"]} >= set(figures), name
        for t in tables:
            md = (out / "tables" / f"{t}.md").read_text()
            assert md.strip() in text and (out / "tables" / f"{t}.csv").is_file()
            assert rebuild_table(out / "tables" / f"{t}.json", ROOT) == md  # built from metric files only
        for f in figures:
            assert (out / "figures" / f"{f}.png").stat().st_size > 1000 and (out / "figures" / f"{f}.pdf").is_file()
    assert "Data: imagefolder:cifar10-jpeg" in text or "Data: torchvision:cifar10" in text
    # what the batch writes (and the quick tier commits) carries no paths of this machine
    for path in list((out / "notebooks").glob("*.ipynb")) + list((out / "runs").glob("*/config.json")):
        assert str(ROOT) not in path.read_text(), path

    # Executed again with every run and analysis reused (the first execution trained, and its notebooks show
    # that), the batch rewrites no byte of what it wrote the time before: figures, tables, manifests, executed
    # notebooks, REPORT.md, run records. Only the status files hold timings.
    _, statuses = run_batch("smoke", executor="inline", project=ROOT, log=print)
    assert all(s["ok"] for s in statuses)
    before = _snapshot(out)
    _, statuses = run_batch("smoke", executor="inline", project=ROOT, log=print)
    assert all(s["ok"] for s in statuses)
    after = _snapshot(out)
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    assert not changed, f"re-executing unchanged results changed: {changed}" + _first_difference(before, after, changed)
    assert {p.name for p in out.iterdir()} <= {"REPORT.md", "FINDINGS.md", "runs", "tables", "figures", "manifest",
                                               "notebooks",
                                               "status", ".jobs", ".staging", ".failed", ".render", ".submitit"}


def _first_difference(before: dict, after: dict, changed: list) -> str:
    """The first changed lines of the first changed text file, for the failure message."""
    import difflib

    for path in changed:
        try:
            a, b = before.get(path, b"").decode(), after.get(path, b"").decode()
        except UnicodeDecodeError:
            continue
        lines = list(difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=1))[:12]
        return f"; {path}:\n" + "\n".join(line[:200] for line in lines)
    return ""


def _snapshot(out: Path) -> dict:
    """Every file the batch keeps under ``out`` (status and job files, which hold times, and scratch folders
    aside), by content."""
    skip = ("status", ".jobs", ".staging", ".failed", ".render", ".submitit")
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.relative_to(out).parts[0] not in skip
            and not p.name.endswith((".pt", ".lock", ".job.json"))}


def _figure_project(tmp_path: Path) -> Path:
    """A project with one notebook that writes a figure and a file through memlib's Outputs, then checks its
    parameter ``value`` (0 fails, after the figure is drawn)."""
    project = _tiny_project(tmp_path, [
        "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\nfrom memlib.report import Outputs\n"
        "out = Outputs(tier, 'good')\nfig, ax = plt.subplots()\nax.plot([1, 2, value])\nax.set_title(str(value))\n"
        "out.figure(fig, 'curve', caption=f'value {value}')",
        "assert value, 'value must not be zero'",
        "print(10 // value)"])
    (project / "notebooks" / "bad.ipynb").unlink()
    return project


def test_a_failing_notebook_keeps_the_last_good_outputs_and_the_batch_exits_nonzero(tmp_path, monkeypatch):
    from memlib.__main__ import main

    project = _figure_project(tmp_path)
    monkeypatch.chdir(project)
    assert main(["reproduce", "--tier", "smoke", "--executor", "inline"]) == 0
    out = project / "outputs" / "smoke"
    good = _snapshot(out)
    assert "figures/curve.png" in good and "notebooks/good.ipynb" in good and "manifest/good.json" in good
    assert "figures/curve.pdf" in good and b"CreationDate" not in good["figures/curve.pdf"]
    nb = good["notebooks/good.ipynb"].decode()
    assert "start_time" not in nb and "iopub" not in nb and "duration" not in nb  # timings are in status/ only

    assert main(["reproduce", "--tier", "smoke", "--executor", "inline"]) == 0  # same inputs: the same bytes
    assert _snapshot(out) == good

    (project / "params" / "good" / "smoke.yaml").write_text("value: 0\n")  # now it fails after drawing
    assert main(["reproduce", "--tier", "smoke", "--executor", "inline"]) == 1
    kept = {k: v for k, v in _snapshot(out).items() if k != "REPORT.md"}  # the report shows the failure
    assert kept == {k: v for k, v in good.items() if k != "REPORT.md"}  # the last good figure, notebook, manifest
    status = json.loads((out / "status" / "good.json").read_text())
    assert not status["ok"] and status["last_good"] and "value must not be zero" in status["error"]
    report = (out / "REPORT.md").read_text()
    assert "**FAILED**" in report and "value must not be zero" in report and status["last_good"] in report
    assert "![curve](figures/curve.png)" in report  # shown beside the failure
    assert (out / ".failed" / "good" / "good.ipynb").is_file()  # what the failed execution wrote, to look at

    (project / "params" / "good" / "smoke.yaml").write_text("value: 5\n")
    assert main(["reproduce", "--tier", "smoke", "--executor", "inline"]) == 0
    assert _snapshot(out)["figures/curve.png"] != good["figures/curve.png"]  # success replaces them


def test_committed_quick_tables_rebuild_from_their_run_files():
    """The committed quick tier is consistent: every table regenerates from the committed metric files."""
    tables = sorted((ROOT / "outputs" / "quick" / "tables").glob("*.json"))
    if not tables:
        pytest.skip("no quick-tier tables committed yet")
    for spec in tables:
        assert rebuild_table(spec, ROOT) == spec.with_suffix(".md").read_text(), spec.name
    quick = ROOT / "outputs" / "quick"
    for path in list((quick / "notebooks").glob("*.ipynb")) + list((quick / "runs").glob("*/config.json")):
        assert str(ROOT) not in path.read_text(), path


def test_an_executed_notebook_does_not_depend_on_how_its_prints_were_split_in_time():
    """Two prints of a cell reach the notebook as one output or two, depending on timing (seen in CI); the
    executed notebook keeps one, so re-executing unchanged results rewrites no byte."""
    from memlib.reproduce import _merged_streams

    split = [{"output_type": "stream", "name": "stdout", "text": "source\n"},
             {"output_type": "stream", "name": "stdout", "text": "difference 0\n"},
             {"output_type": "stream", "name": "stderr", "text": "warning\n"},
             {"output_type": "display_data", "data": {"text/plain": "figure"}, "metadata": {}},
             {"output_type": "stream", "name": "stdout", "text": "after\n"}]
    one = [{"output_type": "stream", "name": "stdout", "text": "source\ndifference 0\n"}, *split[2:]]
    assert _merged_streams(split) == one and _merged_streams(one) == one


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_each_notebook_states_its_measured_times(name):
    """Each notebook shows, under its parameter check, its row of the one table of measured times."""
    from memlib.present import times_line

    line = times_line(name, ROOT)
    assert "smoke tier" in line and "quick tier" in line, f"notebooks/README.md has no times row for {name}"
    source = (ROOT / "notebooks" / f"{name}.py").read_text()
    assert f'show_times("{name}")' in source
