"""Command line: ``python -m memlib train PARAMS.yaml [key=value ...]``,
``python -m memlib evaluate RUN_DIR [--attacks natural,pgd-10,...] [--n N]`` and
``python -m memlib reproduce --tier smoke|quick|paper [--only NOTEBOOK] [--force]`` (train what is needed, execute
the notebooks), ``python -m memlib render --tier quick`` (the same from the committed records alone, training
nothing), ``python -m memlib plan --tier T [--json]`` (what ``reproduce`` would do, and its time here) and
``python -m memlib lab`` (JupyterLab from the project root, saving notebooks without their outputs)."""

from __future__ import annotations

import argparse
from pathlib import Path
import errno
import sys

from memlib.config import DEVICES, ConfigError, MemlibError


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
    import memlib.train  # noqa: F401  (registers how a record's weights are trained again when they are needed)
    from memlib.evaluate import evaluate_run
    from memlib.report import build_table1, table_markdown
    from memlib.runs import Run

    attacks = tuple(a.strip() for a in args.attacks.split(",") if a.strip())
    checkpoints = tuple(c.strip() for c in args.checkpoints.split(",") if c.strip())
    if not attacks or not checkpoints:
        raise ConfigError("--attacks and --checkpoints need at least one name each (e.g. --attacks natural,pgd-10 "
                          "--checkpoints best,final)")
    results = evaluate_run(args.run_dir, attacks, n=args.n, checkpoints=checkpoints, batch_size=args.batch_size,
                           seed=args.seed, device=args.device, force=args.force)
    if set(checkpoints) >= {"best", "final"}:  # the Table 1 row, with the paper's numbers beside
        run = Run(Path(args.run_dir).resolve())
        table = build_table1(Path("/"), {run.config.method: str(run.dir)}, run.config.dataset, list(attacks), args.n,
                             title=run.dir.name, setting="")
        print(table_markdown(table))
    else:
        for which, accs in results.items():
            print(which, {k: (f"{100 * v:.2f}%" if k != "epoch" else v) for k, v in accs.items()})


def _reproduce(args) -> int:
    from memlib.reproduce import run_batch

    only = [n.strip() for n in args.only.split(",")] if args.only else None
    if args.jobs is not None and args.jobs < 1:  # 0 jobs at a time would never end
        raise ConfigError(f"--jobs must be >= 1; got {args.jobs}")
    from memlib.cluster import partition_minutes

    cap = args.timeout_min or (partition_minutes(args.slurm_partition) if args.executor == "slurm" else None)
    slurm = {"partition": args.slurm_partition, "gpus": args.slurm_gpus, "cpus": args.slurm_cpus,
             "timeout_min": cap or 24 * 60}
    if args.runs_per_gpu < 1:
        raise ConfigError(f"--runs-per-gpu must be >= 1; got {args.runs_per_gpu}")
    _, statuses = run_batch(args.tier, only=only, force=args.force, executor=args.executor, jobs=args.jobs,
                            slurm=slurm, records_only=args.command == "render", runs_per_gpu=args.runs_per_gpu)
    return 1 if any(not s["ok"] for s in statuses) else 0


def _plan(args) -> int:
    import json
    from dataclasses import asdict

    from memlib.config import ConfigError
    from memlib.plan import describe, gpu_rate, measure_rate, plan_tier, totals
    from memlib.report import TIERS
    from memlib.reproduce import notebooks
    from memlib.runs import project_root

    project = project_root()
    if args.tier not in TIERS:
        raise ConfigError(f"unknown tier {args.tier!r}; choose one of: {', '.join(TIERS)}")
    names = notebooks(project, args.tier)
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    if set(only) - set(names):
        raise ConfigError(f"no notebook with {args.tier} parameters named {', '.join(sorted(set(only) - set(names)))}; "
                          f"have: {', '.join(names)}")
    names = [n for n in names if n in only] if only else names
    plans = plan_tier(project, args.tier, names)
    rate, gpu = measure_rate(), gpu_rate(project)
    if args.json:
        def hours(flops: float) -> dict:
            return {"flops": flops, "cpu_hours_here": flops / rate / 3600 if rate else None,
                    "h100_hours": flops / gpu / 3600 if gpu else None}

        runs = {r.path: {**{k: v for k, v in asdict(r).items() if k != "cfg"}, **hours(r.flops)}
                for nb in plans for r in nb.runs}
        print(json.dumps({"tier": args.tier, "cpu_flops_per_s": rate, "h100_flops_per_s": gpu,
                          "totals": {**totals(plans), **hours(totals(plans)["flops"])},
                          "notebooks": [{"name": nb.name, "known": nb.known, "runs": [r.path for r in nb.runs],
                                         "last_seconds": nb.last_seconds, **hours(sum(r.flops for r in nb.runs))}
                                        for nb in plans],
                          "runs": runs}, indent=2))
    else:
        machines = f"this machine: {rate / 1e9:.0f} GFLOP/s in one process" + (
            f"; one H100: {gpu / 1e12:.0f} TFLOP/s on the full ResNet-18" if gpu else "")
        print("\n".join([f"plan of the {args.tier} tier ({machines}):", *describe(plans, rate, gpu, verbose=True)]))
    return 0


def _book(args) -> int:
    from memlib.book import build
    from memlib.runs import project_root

    index = build(project_root(), args.tier, Path(args.out) if args.out else None)
    print(f"book: {index} (every internal link and image resolves)")
    return 0


def _export_weights(args) -> int:
    from memlib.runs import project_root
    from memlib.showcase import export

    export(project_root())
    return 0


def _lab(args) -> int:
    from memlib.notebook_files import lab_main
    from memlib.runs import project_root

    return lab_main(project_root(), args.jupyter_args)


def _notebook_filter(args) -> int:
    from memlib.notebook_files import filter_main

    return filter_main(args.files)


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
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--force", action="store_true", help="recompute cached results")
    p.set_defaults(func=_evaluate)

    for command, text in (("reproduce", "execute the notebooks of a tier, training what needs training, and write "
                                        "outputs/<tier>/REPORT.md"),
                          ("render", "rebuild a tier's tables and figures from the committed records alone, "
                                     "training nothing (minutes)")):
        p = sub.add_parser(command, help=text)
        p.add_argument("--tier", default="quick", help="smoke | quick | paper")
        p.add_argument("--only", default="", help="comma-separated notebook names (default: all)")
        p.add_argument("--force", action="store_true", help="retrain runs even when finished ones exist")
        p.add_argument("--executor", default="local", choices=("local", "slurm", "inline"),
                       help="submitit local processes (default), Slurm jobs, or this process")
        p.add_argument("--jobs", type=int, default=None,
                       help="jobs at once with the local executor (runs, then notebooks), each with cores/jobs "
                            "threads (default: the notebooks' own `jobs` parameter, 2 in the quick tier)")
        p.add_argument("--runs-per-gpu", type=int, default=1,
                       help="pack this many runs that no other run needs into one job, as processes sharing its GPU")
        p.add_argument("--slurm-partition", default=None)
        p.add_argument("--slurm-gpus", type=int, default=1, help="GPUs per job (0: CPU jobs)")
        p.add_argument("--slurm-cpus", type=int, default=8, help="CPUs per job (and torch threads)")
        p.add_argument("--timeout-min", type=int, default=None,
                       help="the most minutes a job may ask for (default: the partition's limit, else 24 h); each "
                            "job asks for twice its planned time plus 10 min, and a longer run resumes in requeued "
                            "jobs")
        p.set_defaults(func=_reproduce)

    p = sub.add_parser("book", help="build the static book of a tier (HTML, offline) into build/book and check "
                                    "its links")
    p.add_argument("--tier", default="quick", help="smoke | quick | paper")
    p.add_argument("--out", default=None, help="folder of the book (default: build/book)")
    p.set_defaults(func=_book)

    p = sub.add_parser("export-weights", help="write the quick tier's explorer checkpoints as committed "
                                              "safetensors and outputs/quick/WEIGHTS.sha256 (memlib.showcase)")
    p.set_defaults(func=_export_weights)

    p = sub.add_parser("lab", help="start JupyterLab from the project root; saving a notebook of notebooks/ keeps "
                                   "it free of outputs (memlib.notebook_files)")
    p.add_argument("jupyter_args", nargs=argparse.REMAINDER, help="passed on to jupyter lab, e.g. --port 8890")
    p.set_defaults(func=_lab)

    p = sub.add_parser("notebook-filter", help="strip a notebook to its inputs: stdin to stdout (a git clean "
                                               "filter), or --write FILE... in place")
    p.add_argument("files", nargs=argparse.REMAINDER, help="--write FILE...; nothing: stdin to stdout")
    p.set_defaults(func=_notebook_filter)

    p = sub.add_parser("plan", help="what `reproduce` would do: each notebook's runs, their state, the time here")
    p.add_argument("--tier", default="quick", help="smoke | quick | paper")
    p.add_argument("--only", default="", help="comma-separated notebook names (default: all)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=_plan)

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["lab"], ["notebook-filter"]):  # the rest is passed on as it is (options included)
        args = argparse.Namespace(func=_lab if argv[0] == "lab" else _notebook_filter, jupyter_args=argv[1:],
                                  files=argv[1:])
    else:
        args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except MemlibError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a read-only folder, a full disk, a path that is a file: the files written so far stay
        print(f"error: {os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return code or 0


def os_error(exc: OSError) -> str:
    """One line for an operating-system error: the file, the reason, and what to do (memlib writes every file
    whole or not at all, so the run resumes once the cause is fixed)."""
    what = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space",
            errno.EACCES: "make it writable, or set out_dir/data_dir to a folder you can write",
            errno.EPERM: "make it writable, or set out_dir/data_dir to a folder you can write",
            errno.EROFS: "set out_dir/data_dir to a writable folder",
            errno.ENOTDIR: "a part of this path is a file, not a folder: move it or choose another path",
            errno.EEXIST: "a file stands where a folder is needed: move it or choose another path"}
    where = f"{exc.filename}: " if exc.filename else ""
    todo = what.get(exc.errno, "fix the cause")
    return f"{where}{exc.strerror or exc}; {todo}, then run the same command again (finished work is kept)"


if __name__ == "__main__":
    sys.exit(main())
