"""Does bf16 autocast change what evaluation reports? A numerical check of one of memlib's speed-ups.

memlib runs attacks and predictions under bfloat16 autocast on CUDA (config ``amp``, default on; on the CPU
only with ``cpu_amp``), Table 1's PGD and C&W evaluations included (AutoAttack always runs in fp32). This
script evaluates a trained run's weights on ``n`` class-balanced test images with each attack twice, in fp32
and under bf16 autocast on the same device with the same attack seed, and reports both accuracies, their
difference and how many predictions differ; beside them, the same for fp32 with another random start, the
attack's own variation that a bf16 difference should be compared with. On a CPU without bf16 support it
runs, only slower.

    python benchmarks/amp_check.py outputs/quick/runs/cifar10-resnet18-pgd_at-ecfca099de --n 1000

writes ``benchmarks/results/amp-check-<device>-<run>.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from memlib.data import balanced_subset, load_split  # noqa: E402
from memlib.evaluate import load_weights, predict  # noqa: E402
from memlib.io import atomic_write_json  # noqa: E402
from memlib.runs import code_version, read_run, run_dir_for, select_device  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a finished run folder (its weights and its data source must be present)")
    p.add_argument("--which", default="final", help="checkpoint: final | best | last")
    p.add_argument("--n", type=int, default=1000, help="class-balanced test images")
    p.add_argument("--attacks", default="natural,pgd-10,pgd-50,cw-50", help="comma-separated attack specs")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg, record = read_run(args.run_dir)
    device = select_device(args.device)
    model, _ = load_weights(args.run_dir, args.which, device)
    test = load_split(cfg, train=False)
    ids = balanced_subset(test.labels, min(args.n, len(test.labels)), seed=0)
    x, y = test.images[ids].to(device), test.labels[ids].to(device)
    rows = []
    for spec in args.attacks.split(","):
        preds, seconds = {}, {}
        for amp, seed in ((False, 0), (True, 0), (False, 1)):  # bf16 with fp32's random start; fp32 with another
            torch.manual_seed(seed)
            t0 = time.perf_counter()
            preds[amp, seed] = predict(model, x, y, spec, eps=cfg.eps, alpha=cfg.alpha, norm=cfg.norm,
                                       batch_size=cfg.eval_batch_size, amp=amp, fold_bn=cfg.fold_bn)
            seconds[amp, seed] = time.perf_counter() - t0
        fp32, bf16, other = ((preds[k] == y).float().mean().item() for k in ((False, 0), (True, 0), (False, 1)))
        rows.append({"attack": spec, "fp32": fp32, "bf16": bf16, "difference": bf16 - fp32,
                     "predictions_differ": int((preds[False, 0] != preds[True, 0]).sum()),
                     "fp32_other_start": other, "other_start_difference": other - fp32,
                     "other_start_predictions_differ": int((preds[False, 0] != preds[False, 1]).sum()),
                     "seconds_fp32": seconds[False, 0], "seconds_bf16": seconds[True, 0]})
    result = {"run": Path(args.run_dir).name, "checkpoint": args.which, "examples": len(y), "device": str(device),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "code_version": code_version(),
              "data": run_dir_for(cfg)[2], "run_data": record["data_source"], "rows": rows}
    lines = [f"bf16 autocast vs fp32 evaluation of {result['run']} ({args.which}.pt), {len(y)} class-balanced test "
             f"images, {device}", "",
             "| attack | fp32 | bf16 (same start) | predictions that differ | fp32, another start | predictions that "
             "differ | time fp32 / bf16 |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['attack']} | {100 * r['fp32']:.2f}% | {100 * r['bf16']:.2f}% ({100 * r['difference']:+.2f}) | "
              f"{r['predictions_differ']} | {100 * r['fp32_other_start']:.2f}% "
              f"({100 * r['other_start_difference']:+.2f}) | {r['other_start_predictions_differ']} | "
              f"{r['seconds_fp32']:.1f} s / {r['seconds_bf16']:.1f} s |"
              for r in rows]
    print("\n".join(lines))
    atomic_write_json(Path(args.out) / f"amp-check-{device.type}-{result['run']}.json", result)
    return result


if __name__ == "__main__":
    main()
