"""Command line: ``python -m memlib train PARAMS.yaml [key=value ...]``,
``python -m memlib evaluate RUN_DIR [--attacks natural,pgd-10,...] [--n N]`` and
``python -m memlib reproduce --tier smoke|quick|paper [--only NOTEBOOK] [--force]``."""

from __future__ import annotations

import argparse
import sys

from memlib.config import MemlibError


def _train(args) -> None:
    from memlib.config import RunConfig
    from memlib.train import train

    cfg = RunConfig.load(args.params, args.overrides)
    result = train(cfg, force=args.force)
    last = result.metrics[-1] if result.metrics else {}
    print(f"run directory: {result.run_dir}")
    if last:
        print(f"final epoch {last['epoch']}: test natural {100 * last['test_nat_acc']:.2f}%, "
              f"test PGD-{cfg.eval_steps} {100 * last['test_rob_acc']:.2f}%")


def _evaluate(args) -> None:
    from memlib.evaluate import evaluate_run, format_table, table_row

    attacks = tuple(a.strip() for a in args.attacks.split(",") if a.strip())
    checkpoints = tuple(c.strip() for c in args.checkpoints.split(",") if c.strip())
    results = evaluate_run(args.run_dir, attacks, n=args.n, checkpoints=checkpoints, batch_size=args.batch_size,
                           seed=args.seed, device=args.device, force=args.force)
    if set(checkpoints) >= {"best", "final"}:
        print(format_table({args.run_dir.rstrip("/").split("/")[-1]: table_row(results, attacks)}))
    else:
        for which, accs in results.items():
            print(which, {k: (f"{100 * v:.2f}%" if k != "epoch" else v) for k, v in accs.items()})


def _reproduce(args) -> None:
    from memlib.reproduce import run_batch

    only = [n.strip() for n in args.only.split(",")] if args.only else None
    slurm = {"partition": args.slurm_partition, "gpus": args.slurm_gpus, "cpus": args.slurm_cpus,
             "timeout_min": args.timeout_min}
    run_batch(args.tier, only=only, force=args.force, executor=args.executor, jobs=args.jobs, slurm=slurm)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m memlib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train (or resume, or reuse) the run of a config")
    p.add_argument("params", help="YAML file of config keys (see memlib/config.py)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. epochs=3 eps=8/255")
    p.add_argument("--force", action="store_true", help="train again even if this exact run has finished")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="evaluate a run's best and final checkpoints")
    p.add_argument("run_dir")
    p.add_argument("--attacks", default="natural,pgd-10",
                   help="comma-separated: natural, pgd-K, cw-K, autoattack (Table 1: natural,pgd-10,pgd-1000,"
                        "cw-1000,autoattack)")
    p.add_argument("--n", type=int, default=0, help="class-balanced number of test examples (0 = all)")
    p.add_argument("--checkpoints", default="best,final", help="best, final and/or last")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--seed", type=int, default=None, help="seed of the test subset (default: the run's own)")
    p.add_argument("--device", default="auto")
    p.add_argument("--force", action="store_true", help="recompute cached results")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("reproduce", help="execute the notebooks of a tier and write outputs/<tier>/REPORT.md")
    p.add_argument("--tier", default="quick", help="smoke | quick | paper")
    p.add_argument("--only", default="", help="comma-separated notebook names (default: all)")
    p.add_argument("--force", action="store_true", help="retrain runs even when finished ones exist")
    p.add_argument("--executor", default="local", choices=("local", "slurm", "inline"),
                   help="submitit local processes (default), Slurm jobs, or this process")
    p.add_argument("--jobs", type=int, default=1, help="notebooks at once with the local executor")
    p.add_argument("--slurm-partition", default=None)
    p.add_argument("--slurm-gpus", type=int, default=1)
    p.add_argument("--slurm-cpus", type=int, default=8)
    p.add_argument("--timeout-min", type=int, default=24 * 60)
    p.set_defaults(func=_reproduce)

    args = parser.parse_args(argv)
    try:
        args.func(args)
    except MemlibError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
