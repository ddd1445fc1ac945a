"""Does folding BatchNorm into the attack's convolutions (config key ``fold_bn``) change what a run computes?

    python benchmarks/fold_ab.py outputs/quick/runs/cifar10-resnet18-pgd_at-7e5bbcbfc9 [more run dirs]
    python benchmarks/fold_ab.py outputs/quick/runs/cifar10-resnet18-pgd_at-7e5bbcbfc9 --seeds 0 1 2 3 4 5

For each committed run (made before ``fold_bn`` existed, i.e. unfolded) it trains the same config twice in a
scratch folder, with ``fold_bn: true`` and ``fold_bn: false``, two single-threaded runs at a time as the
notebooks train, then prints best/final PGD-10 test accuracy, the best-minus-final gap, the final training
accuracies and the training time of the committed run and of both re-runs, and whether the ``fold_bn: false``
re-run equals the committed run exactly. The attack strength itself is compared on the committed final weights:
PGD-10 accuracy with and without folding from the same random starts. With ``--seeds`` it trains both
settings for each seed (the run's config otherwise) and prints mean +- std over seeds of the final training
accuracies and the robust-overfitting gap, and the mean of the per-seed differences (folded minus unfolded).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from memlib.data import balanced_subset, load_split  # noqa: E402
from memlib.evaluate import accuracy, load_weights  # noqa: E402
from memlib.runs import read_metrics, read_run  # noqa: E402
from memlib.train import train_many  # noqa: E402


def numbers(metrics: list[dict]) -> dict:
    """Best and final PGD-10 test accuracy, their gap, final training accuracies (%) and training time (s)."""
    evaluated = [m for m in metrics if "test_rob_acc" in m]
    best = max(evaluated, key=lambda m: (m["test_rob_acc"], m["test_nat_acc"]))
    final = evaluated[-1]
    return {"best": 100 * best["test_rob_acc"], "best_epoch": best["epoch"], "final": 100 * final["test_rob_acc"],
            "gap": 100 * (best["test_rob_acc"] - final["test_rob_acc"]), "train_nat": 100 * final["train_nat_acc"],
            "train_rob": 100 * final["train_rob_acc"], "seconds": sum(m["time_train"] for m in metrics)}


def summary(metrics: list[dict]) -> str:
    n = numbers(metrics)
    return (f"best {n['best']:.1f} (epoch {n['best_epoch']}), final {n['final']:.1f}, gap {n['gap']:.1f}; "
            f"final train nat/rob {n['train_nat']:.1f}/{n['train_rob']:.1f}; {n['seconds']:.0f} s training")


def mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):5.1f} +- {statistics.stdev(values) if len(values) > 1 else 0.0:4.1f}"


def train_pairs(cfg, seeds: list[int], scratch: Path) -> list[tuple]:
    """(fold_bn true, fold_bn false) run results of ``cfg`` for each seed, two single-threaded runs at a time."""
    cfgs = [cfg.replace(out_dir=str(scratch / f"fold_{f}".lower()), fold_bn=f, seed=s, progress=False)
            for s in seeds for f in (True, False)]
    results = train_many(cfgs, jobs=2)
    return list(zip(results[0::2], results[1::2]))


def seed_study(run: Path, seeds: list[int], scratch: Path) -> None:
    """Both settings for each seed; mean +- std over seeds and the mean paired difference."""
    pairs = train_pairs(read_run(run)[0], seeds, scratch)
    folded, plain = [numbers(a.metrics) for a, _ in pairs], [numbers(b.metrics) for _, b in pairs]
    print(f"\n{run.name}: seeds {seeds}, mean +- std over seeds (folded - unfolded: mean of the paired differences)")
    for key in ("train_nat", "train_rob", "best", "final", "gap"):
        diffs = [a[key] - b[key] for a, b in zip(folded, plain)]
        print(f"  {key:9s}  fold_bn true {mean_std([r[key] for r in folded])}   fold_bn false "
              f"{mean_std([r[key] for r in plain])}   difference {mean_std(diffs)}   per seed "
              + " ".join(f"{d:+.1f}" for d in diffs))


def strip_times(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if not k.startswith("time")} for m in metrics]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run directories made without folding")
    p.add_argument("--out", default="", help="scratch folder for the re-runs (default: a temporary one)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="train both settings for each of these seeds and compare means (instead of the one re-run)")
    args = p.parse_args(argv)
    scratch = Path(args.out or tempfile.mkdtemp(prefix="fold_ab-"))
    for run in map(Path, args.runs):
        if args.seeds:
            seed_study(run, args.seeds, scratch)
            continue
        cfg, _ = read_run(run)
        [(folded, plain)] = train_pairs(cfg, [cfg.seed], scratch)
        committed = read_metrics(run)
        print(f"\n{run.name} (PGD-10 test accuracy over {cfg.test_subset or 'all'} images, "
              f"training accuracies over {cfg.train_eval_subset or 'all'})")
        print(f"  committed (unfolded):   {summary(committed)}")
        print(f"  re-run, fold_bn true:   {summary(folded.metrics)}")
        print(f"  re-run, fold_bn false:  {summary(plain.metrics)}")
        print(f"  fold_bn false re-run equals the committed run in every metric: "
              f"{strip_times(plain.metrics) == strip_times(committed)}")
        model, _ = load_weights(run, "final")
        test = load_split(cfg, train=False)
        ids = balanced_subset(test.labels, 1000, 1)
        for fold in (True, False):
            accs = []
            for seed in range(3):
                torch.manual_seed(seed)
                accs.append(100 * accuracy(model, test.images[ids], test.labels[ids], "pgd-10", eps=cfg.eps,
                                           alpha=cfg.alpha, fold_bn=fold))
            print(f"  committed final weights, PGD-10 on 1,000 test images, 3 random starts, fold_bn {fold}: "
                  + ", ".join(f"{a:.1f}" for a in accs))


if __name__ == "__main__":
    main()
