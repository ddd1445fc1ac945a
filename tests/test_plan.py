"""The plan: declared experiments, runs deduplicated across notebooks, their state and their FLOP cost."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from memlib import experiments
from memlib.config import ConfigError, RunConfig
from memlib.plan import forward_flops, plan_tier, run_flops, step_flops, totals
from memlib.reproduce import notebooks
from memlib.runs import project_root
from memlib.train import train

ROOT = Path(__file__).resolve().parent.parent


def test_flops_count_the_models_and_the_passes():
    # ResNet-18 (CIFAR variant): 0.56 G multiply-adds per 32x32 image, the figure of its literature
    assert forward_flops("resnet18", 1.0, "cifar10") == pytest.approx(2 * 0.556e9, rel=0.01)
    assert forward_flops("wrn-28-10", 1.0, "cifar10") > 9 * forward_flops("resnet18", 1.0, "cifar10")
    f = forward_flops("resnet18", 0.125, "cifar10")
    # PGD-10 AT: 10 attack steps (forward + input backward) and one update (forward + backward): 23 forwards,
    # the count torch's FlopCounterMode gives for memlib's step (benchmarks/results/cpu-1thread.json)
    assert step_flops(RunConfig(width=0.125)) == pytest.approx(23 * f)
    reference = json.loads((ROOT / "benchmarks/results/cpu-1thread.json").read_text())
    assert step_flops(RunConfig(width=0.125)) == pytest.approx(reference["memlib_train_flops_per_example"], rel=0.05)
    assert step_flops(RunConfig(width=0.125, method="standard")) == pytest.approx(3 * f)
    assert step_flops(RunConfig(width=0.125, method="coteaching")) == pytest.approx(46 * f)
    assert step_flops(RunConfig(width=0.125, train_attack="fgsm")) == pytest.approx(5 * f)
    # a run: epochs x examples x step, plus natural + PGD-k on the evaluation subsets when evaluated
    cfg = RunConfig(width=0.125, epochs=4, train_subset=100, test_subset=50, train_eval_subset=30, eval_every=2,
                    eval_steps=3)
    assert run_flops(cfg) == pytest.approx(4 * 100 * 23 * f + 2 * 80 * 8 * f)


def _notebook(project: Path, name: str, source: str, smoke: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source, metadata={"tags": ["parameters"]})]
    (project / "notebooks").mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, project / "notebooks" / f"{name}.ipynb")
    (project / "params" / name).mkdir(parents=True, exist_ok=True)
    (project / "params" / name / "smoke.yaml").write_text(smoke)


def test_a_tier_plan_counts_each_run_once_with_its_state_notebooks_and_dependencies(tiny_cfg, tmp_path, monkeypatch):
    project = tmp_path / "project"
    common = tiny_cfg(epochs=2)
    base = {k: v for k, v in common.to_dict().items() if k not in ("out_dir", "data_dir")}
    (project / "params" / "bases").mkdir(parents=True)
    (project / "params" / "bases" / "tiny.yaml").write_text(json.dumps(base))  # JSON is YAML
    _notebook(project, "t1_first", "base = 'tiny'\nseeds = [0]\n", "seeds: [0, 1]\n")
    _notebook(project, "t2_second", "base = 'tiny'\n", "{}\n")

    experiments.registered()  # the project's own, loaded before the registry is swapped for a copy
    monkeypatch.setattr(experiments, "_REGISTRY", {**experiments._REGISTRY})  # the toys go with the copy

    @experiments.experiment("t1_first")
    def first(p, make):
        return {("seed", s): make(seed=s) for s in p["seeds"]}

    @experiments.experiment("t2_second")
    def second(p, make):
        from memlib.runs import run_dir_for
        teacher = make(seed=0)  # the very run of t1_first, by construction (the same base)
        return {"teacher": teacher, "student": make(method="kd_swa", swa_start=1,
                                                    kd_teacher=str(run_dir_for(teacher)[0] / "best.pt"))}

    runs = project / "outputs" / "smoke" / "runs"
    train(RunConfig(**{**base, "out_dir": str(runs), "data_dir": common.data_dir, "seed": 1}), until_epoch=1)

    plans = plan_tier(project, "smoke", ["t1_first", "t2_second"])
    t = totals(plans)
    assert t["runs"] == 3 and t["to_train"] == 3  # seed 0 is shared: one run, not two
    shared = plans[0].runs[0]
    assert shared is plans[1].runs[0] and shared.notebooks == ["t1_first", "t2_second"]
    stopped = plans[0].runs[1]
    assert (stopped.state, stopped.epochs_done, stopped.epochs) == ("stopped", 1, 2)
    assert stopped.flops_to_go == pytest.approx(stopped.flops / 2)
    student = plans[1].runs[1]
    assert student.state == "missing" and student.needs == [shared.path]
    assert t["flops"] == pytest.approx(sum(r.flops for r in (shared, stopped, student)))


@pytest.mark.parametrize("tier", ["smoke", "quick", "paper"])
def test_every_notebook_declares_its_runs_in_every_tier(tier):
    names = notebooks(ROOT, tier)
    assert set(names) <= set(experiments.registered())
    plans = plan_tier(ROOT, tier, names)
    assert all(nb.known and nb.runs for nb in plans)
    assert totals(plans)["flops"] > 0


def test_the_committed_quick_runs_keep_their_hashes():
    """Each quick notebook declares every run its committed manifest names: no committed run is orphaned by a
    change of how configs are built (a notebook may declare runs its last execution did not have yet)."""
    for name in notebooks(ROOT, "quick"):
        manifest = json.loads((ROOT / "outputs" / "quick" / "manifest" / f"{name}.json").read_text())
        p = experiments.params(name, "quick", ROOT)
        declared = experiments.declare(name, p, ROOT / "outputs" / "quick" / "runs", ROOT / "data")
        orphans = set(manifest["runs"]) - {str(d.relative_to(ROOT)) for d in declared.unique()}
        assert not orphans, (name, sorted(orphans))
        assert project_root() == ROOT


def test_the_readme_states_the_paper_tiers_plan():
    """The README's paper-tier totals are the plan's (update them when the paper parameters change)."""
    import re

    from memlib.plan import gpu_rate

    plans = plan_tier(ROOT, "paper", notebooks(ROOT, "paper"))
    t = totals(plans)
    stated = re.search(r"paper tier is (\d+) runs, about (\d+) H100-hours", (ROOT / "README.md").read_text())
    assert stated, "README.md no longer states the paper tier's runs and H100-hours"
    assert int(stated.group(1)) == t["runs"]
    assert int(stated.group(2)) == pytest.approx(t["flops"] / gpu_rate(ROOT) / 3600, abs=10)


def test_runs_shared_between_notebooks_share_their_base_by_reference():
    """No two parameter files spell out the same base: one that others use too is a file in params/bases."""
    import yaml

    inline = {}
    for path in sorted((ROOT / "params").glob("[0-9]*/*.yaml")):
        base = (yaml.safe_load(path.read_text()) or {}).get("base")
        if isinstance(base, dict) and "from" not in base:
            cfg = RunConfig(**base)
            same = [other for other, c in inline.items() if c == cfg]
            assert not same, f"{path.relative_to(ROOT)} repeats the base of {same[0]}: name a file of params/bases"
            inline[str(path.relative_to(ROOT))] = cfg


def test_a_variant_trains_at_its_own_noise_rates_and_attempts_are_declared_per_method_and_seed(tmp_path):
    p = experiments.params("02_random_labels", "smoke", ROOT, overrides={
        "variants": {"v": {"eps": 4 / 255, "noise_rates": [0.0, 1.0]}},
        "attempts": {"A": {"methods": ["pgd_at"], "seeds": [0, 3], "changes": {"train_subset": 60}}}})
    cfgs = experiments.declare("02_random_labels", p, tmp_path, tmp_path).configs
    assert cfgs[("variant", "v", "trades")].noise_rate == 1.0 and cfgs[("variant", "v", "trades", 0.0)].noise_rate == 0
    assert cfgs[("variant", "v", "trades", 0.0)].eps == 4 / 255
    assert [(k, c.seed, c.train_subset) for k, c in cfgs.items() if k[0] == "attempt"] == [
        (("attempt", "A", "pgd_at", 0), 0, 60), (("attempt", "A", "pgd_at", 3), 3, 60)]
    with pytest.raises(ConfigError, match="attempt 'A' must be a mapping with methods"):
        experiments.declare("02_random_labels", {**p, "attempts": {"A": {"seeds": [1]}}}, tmp_path, tmp_path)
