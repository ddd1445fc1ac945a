"""The trained models the explorers show by default, in every tier: a few checkpoints of the quick tier,
committed as safetensors beside their run records (about 0.7 MB each, ``LIMIT_BYTES`` in all) and listed with
their sha256 in ``outputs/quick/WEIGHTS.sha256`` (``sha256sum -c`` reads it). A smoke model sits at chance, so
an explorer on it looks broken (the prediction never changes with eps); with these, a student's first *Run All*
shows what adversarial training does. Without them (weights not exported), an explorer falls back to its own
tier's models and says so.

``python -m memlib export-weights`` writes them from the quick tier's trained checkpoints (after
``reproduce --tier quick``); loading them never unpickles anything."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from memlib.config import ConfigError
from memlib.io import atomic_write_text, file_digest, load_checkpoint, save_weights_file, weights_file_metadata
from memlib.runs import Run, committed_weights, read_metrics

TIER = "quick"
LIMIT_BYTES = 5_000_000
SUMS = "WEIGHTS.sha256"
# {notebook: {run key of its experiment: checkpoint}}: what each explorer needs.
COMMITTED = {
    "01_introduction": {"standard": "final", "pgd_at": "final"},  # the eps explorer
    "05_robust_overfitting": {("seed", 0): "final"},  # the hard-example gallery's model (its loss_checkpoint)
}


def _declared(project: Path, notebook: str):
    from memlib.experiments import declare, params

    p = params(notebook, TIER, project)
    return declare(notebook, p, Path("outputs") / TIER / "runs", "data")


def committed_runs(project: Path, notebooks=None) -> list[tuple[str, object, Path, str]]:
    """(notebook, run key, run folder, checkpoint) of every committed checkpoint (of ``notebooks``, default all),
    in ``COMMITTED``'s order."""
    out = []
    for notebook, keys in COMMITTED.items():
        if notebooks is not None and notebook not in notebooks:
            continue
        dirs = _declared(project, notebook).dirs
        for key, which in keys.items():
            out.append((notebook, key, project / dirs[key], which))
    return out


def export(project: Path, log=print) -> Path:
    """Write each ``COMMITTED`` checkpoint of the quick tier as ``<which>.safetensors`` in its run folder, from
    its trained ``<which>.pt`` (one exported before and not trained here since is kept), and
    ``outputs/quick/WEIGHTS.sha256``; stops in one line when a checkpoint is neither trained nor exported here, or
    when the files would exceed ``LIMIT_BYTES``."""
    project = Path(project)
    files = []
    for notebook, key, run_dir, which in committed_runs(project):
        pt, target = run_dir / f"{which}.pt", run_dir / f"{which}.safetensors"
        if not pt.is_file() and target.is_file() and committed_weights(run_dir, which) == target \
                and weights_file_metadata(target).get("run_id") == Run(run_dir).record["run_id"]:
            files.append(target)  # exported before, its checkpoint not trained here since: kept as it is
            log(f"{target.relative_to(project)}: kept")
            continue
        if not pt.is_file():
            raise ConfigError(f"{run_dir.name} has no {which}.pt here (notebook {notebook}): `python -m memlib "
                              f"reproduce --tier {TIER} --only {notebook}` trains it, then export again")
        run = Run(run_dir)
        state = load_checkpoint(pt, expect_run_id=run.record["run_id"])
        save_weights_file(target, state, file_digest(pt))
        files.append(target)
        log(f"{target.relative_to(project)}: {target.stat().st_size / 1e6:.2f} MB")
    total = sum(f.stat().st_size for f in files)
    if total > LIMIT_BYTES:
        raise ConfigError(f"the committed weights would take {total / 1e6:.1f} MB, more than "
                          f"{LIMIT_BYTES / 1e6:.0f} MB: commit fewer checkpoints (memlib/showcase.py, COMMITTED)")
    sums = project / "outputs" / TIER / SUMS
    atomic_write_text(sums, "".join(f"{file_digest(f)}  {f.relative_to(sums.parent)}\n" for f in files))
    log(f"{sums.relative_to(project)}: {len(files)} files, {total / 1e6:.2f} MB")
    return sums


def check(project: Path) -> list[str]:
    """What is wrong with the committed weights (empty: nothing): a listed file missing or changed, a file of
    another run, or more than ``LIMIT_BYTES``."""
    project = Path(project)
    sums = project / "outputs" / TIER / SUMS
    if not sums.is_file():
        return [f"{sums.relative_to(project)} is missing"]
    problems, total = [], 0
    for line in sums.read_text().splitlines():
        digest, rel = line.split("  ", 1)
        path = sums.parent / rel
        if not path.is_file():
            problems.append(f"{rel} is listed but missing")
            continue
        total += path.stat().st_size
        if file_digest(path) != digest:
            problems.append(f"{rel}: sha256 differs from {SUMS}")
        if weights_file_metadata(path).get("run_id") != Run(path.parent).record["run_id"]:
            problems.append(f"{rel} is not the weights of its run folder's record")
    if total > LIMIT_BYTES:
        problems.append(f"{total / 1e6:.1f} MB of weights, more than {LIMIT_BYTES / 1e6:.0f} MB")
    return problems


@dataclass
class Shown:
    """What an explorer shows: {display name: model}, the PGD steps of their runs' robust accuracy, and a line
    saying which models these are."""
    models: dict
    steps: int
    note: str


def explorer_models(project: Path, notebook: str, tier: str, own: dict, own_steps: int, device="cpu") -> Shown:
    """The models of ``notebook``'s explorer: the committed quick-tier ones when their weights are here (with
    their model, tier, epoch and test accuracy in the note), else ``own`` (this tier's {display name: model})
    with a note saying so."""
    from memlib.present import name

    project = Path(project)
    found = [(key, run_dir, which) for _, key, run_dir, which in committed_runs(project, [notebook])]
    if not found or not all(committed_weights(d, w) or (d / f"{w}.pt").is_file() for _, d, w in found):
        return Shown(own, own_steps, fallback_note(notebook, tier))
    shown, parts = {}, []
    for key, run_dir, which in found:
        run = Run(run_dir)
        model, state = run.load(which, device)
        c = run.config
        shown[name(c.method)] = model
        row = next((r for r in read_metrics(run_dir) if r.get("epoch") == state.get("epoch")), {})
        acc = (f"{100 * row['test_nat_acc']:.1f}% natural / {100 * row['test_rob_acc']:.1f}% PGD-{c.eval_steps} "
               f"test accuracy on {c.test_subset} images" if "test_rob_acc" in row else "accuracy not recorded")
        parts.append(f"{name(c.method)} ({which} checkpoint, epoch {state.get('epoch')}: {acc})")
    c = Run(found[0][1]).config
    note = (f"Explorer models: the {TIER} tier's trained {c.model} (width {c.width:g}, {c.train_subset} training "
            f"images, {c.epochs} epochs; committed weights, `{SUMS}`): " + "; ".join(parts) + ".")
    return Shown(shown, c.eval_steps, note)


@dataclass
class ShownRuns:
    """The runs a learning-curve explorer draws: {run key: folder}, {run key: config}, and a line saying whose
    they are ("" for the notebook's own)."""
    runs: dict
    configs: dict
    note: str


def explorer_runs(project: Path, notebook: str, tier: str, own_runs: dict, own_configs: dict) -> ShownRuns:
    """The runs of ``notebook``'s learning-curve explorer. In the smoke tier, whose runs train for seconds and
    show little, the committed quick tier's records of the same notebook when every one of them is here (they are
    committed with the project; drawing them needs no weights), with a note saying so; else the tier's own
    (``own_runs``: {key: folder}, ``own_configs``: {key: config})."""
    from memlib.runs import run_state

    project = Path(project)
    if tier != "smoke":
        return ShownRuns(own_runs, own_configs, "")
    declared = _declared(project, notebook)
    dirs = {key: project / d for key, d in declared.dirs.items()}
    if not dirs or any(run_state(d)[0] not in ("finished", "record") for d in dirs.values()):
        return ShownRuns(own_runs, own_configs, "")
    from memlib.present import DATA_NAMES

    c = next(iter(declared.configs.values()))
    return ShownRuns(dirs, declared.configs, (
        f"Explorer runs: the {TIER} tier's committed records ({c.model} width {c.width:g}, {c.train_subset} "
        f"{DATA_NAMES.get(c.dataset, c.dataset)} training images, {c.epochs} epochs), not this {tier} tier's, "
        f"which train for seconds and show little (they are in the figures above). `tier = \"{TIER}\"` draws "
        f"every figure from them."))


def explorer_hard_examples(project: Path, tier: str, own, own_second, own_names: tuple) -> tuple:
    """05's hard-example explorer: (examples, the second model's losses, their two names, a note). Outside the
    quick tier, the committed quick-tier PGD-AT model (``COMMITTED``) with its and the second seed's saved
    adversarial losses when they are here; else this tier's own (``own``: a ``HardExamples``), with a note when
    the committed model is missing."""
    from memlib.analysis import adv_losses_key, read_adversarial_losses
    from memlib.experiments import params
    from memlib.lectures.robust_overfitting import HardExamples, loss_attack

    notebook = "05_robust_overfitting"
    if tier == TIER:
        return own, own_second, own_names, ""
    p, dirs = params(notebook, TIER, project), _declared(project, notebook).dirs
    (_, key, first, which), = committed_runs(project, [notebook])
    second = project / dirs[("seed", p["seeds"][1])]
    if not (committed_weights(first, which) or (first / f"{which}.pt").is_file()):
        return own, own_second, own_names, fallback_note(notebook, tier)
    a = loss_attack(p)  # the losses kept with the records: read, never computed (no run is trained again)
    kept = adv_losses_key(which, eps=a["eps"], alpha=a["alpha"], steps=a["steps"], norm=Run(first).config.norm,
                          seed=a["seed"])
    saved = {d: read_adversarial_losses(d, kept) for d in (first, second)}
    if any(v is None for v in saved.values()):
        return own, own_second, own_names, fallback_note(notebook, tier)
    c = Run(first).config
    note = (f"Explorer: the {TIER} tier's trained PGD-AT model ({c.model} width {c.width:g}, {c.train_subset} "
            f"training images, {c.epochs} epochs, seed {key[1]}, {which} checkpoint; committed weights, `{SUMS}`) "
            f"and its adversarial losses beside those of seed {p['seeds'][1]}'s model, not this {tier} tier's.")
    return (HardExamples.of_run(first, saved[first], which, a), saved[second]["losses"],
            (f"seed {key[1]}", f"seed {p['seeds'][1]}"), note)


LIVE = {  # explorers that compute from checkpoints none of which is committed: what committing them would take
    "03_convergence": "a checkpoint per kept epoch of two runs",
    "04_generalization": "the final checkpoint of every Fig. 6 model, more than the 5 MB the committed set may take",
}


def own_models_note(notebook: str, tier: str) -> str:
    """The note of an explorer that computes live from this tier's own checkpoints (``LIVE``): below the quick
    tier it says that these are small models and how to see trained ones; "" in the quick and paper tiers."""
    if tier != "smoke" or notebook not in LIVE:
        return ""
    return (f"Explorer models: this {tier} tier's own, trained for seconds, so the view shows little. No "
            f"{TIER}-tier weights are committed for it ({LIVE[notebook]}): `python -m memlib reproduce --tier "
            f"{TIER} --only {notebook}` trains them here, then `tier = \"{TIER}\"` in the parameters cell shows "
            f"them.")


def fallback_note(notebook: str, tier: str) -> str:
    """The note of an explorer showing its own tier's models because the committed ones are not here."""
    return (f"Explorer models: this {tier} tier's own (the committed {TIER}-tier weights are not here). "
            + ("Smoke models sit near chance, so their predictions hardly change. " if tier == "smoke" else "")
            + f"`python -m memlib reproduce --tier {TIER} --only {notebook}` then `python -m memlib "
              f"export-weights` puts trained ones in place.")
