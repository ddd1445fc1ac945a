"""PGD-10 adversarial-training throughput: memlib vs a loop written the way the authors' public code trains.

    python benchmarks/bench_train.py                 # CPU defaults: ResNet-18 at width 0.125, batch 128
    python benchmarks/bench_train.py --width 1 --reps 5   # a GPU run (ResNet-18, CIFAR-10; 100 batches a rep)

In one process, on the same images, model, batch size and attack, it alternates

1. the *reference-style* loop: a torch ``Dataset`` of PIL images with torchvision transforms per example
   (random crop 32 / padding 4, horizontal flip, ToTensor) and a ``DataLoader``; fp32, contiguous NCHW,
   ``.to(device)`` per batch; the attack as in REFERENCE_FACTS (model.eval(), uniform start, 10 sign steps of
   2/255 on the CE with ``loss.backward()``, which also fills parameter gradients; model.train() for the update);
2. memlib's training step as the notebooks use it: uint8 images on the device, vectorized augmentation,
   ``memlib.methods.pgd_at`` (input gradients only; the attack's eval-mode passes with BatchNorm folded into
   the convolutions, ``--no-fold`` without), channels_last where it pays, bf16 autocast on CUDA, and on CUDA
   the step recorded as a CUDA graph once per pass and replayed (``memlib.train.GraphedStep``;
   ``--no-graphs`` for eager steps); each pass is one call of memlib's own epoch function, recording included;

for ``--reps`` repetitions of ``--batches`` batches each, and reports median examples/s and the ratio of
medians. It also measures PGD-10 and AutoAttack evaluation throughput on class-balanced test images (with
the benchmark's barely trained model, or with ``--eval-run``'s trained weights, on which AutoAttack's later
attacks have robust points to work on), the best FLOP/s of three timings of a large ``torch.mm``
on the same device, memlib's achieved model FLOP/s in AT training (FLOPs of one training step counted with
``torch.utils.flop_counter``) as a fraction of it, and peak memory. On the CPU it also profiles one memlib
pass to split its time between the convolutions (which carry all counted FLOPs but the last layer's) and
everything else, and reports the FLOP/s reached inside the convolutions: the ceiling of the whole step.
Results go to ``benchmarks/results/<device>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from memlib.config import RunConfig  # noqa: E402
from memlib.data import Loader, balanced_subset, load_split  # noqa: E402
from memlib.evaluate import accuracy, load_weights, predict  # noqa: E402
from memlib.methods import METHODS, Context  # noqa: E402
from memlib.models import build_model  # noqa: E402
from memlib.runs import code_version, read_run, run_dir_for, uses_amp, uses_channels_last  # noqa: E402
from memlib.train import train_epoch  # noqa: E402

EPS, ALPHA, STEPS = 8 / 255, 2 / 255, 10


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


# --- the reference-style loop ---------------------------------------------------------------------

class PILDataset(torch.utils.data.Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        from PIL import Image
        self.images = [Image.fromarray(img.transpose(1, 2, 0)) for img in images]
        self.labels, self.transform = labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(self.images[i]), int(self.labels[i])


def reference_attack(model, x, y):
    model.eval()
    delta = torch.zeros_like(x).uniform_(-EPS, EPS)
    delta = (x + delta).clamp(0, 1) - x
    delta.requires_grad = True
    for _ in range(STEPS):
        loss = F.cross_entropy(model(x + delta), y)
        loss.backward()
        d = delta + ALPHA * delta.grad.detach().sign()
        d = d.clamp(-EPS, EPS)
        d = (x + d).clamp(0, 1) - x
        delta.data = d
        delta.grad.zero_()
    model.train()
    return (x + delta).detach()


def reference_epoch(model, opt, loader, device, batches):
    n = 0
    for b, (x, y) in enumerate(loader):
        if b == batches:
            break
        x, y = x.to(device), y.to(device)
        x_adv = reference_attack(model, x, y)
        loss = F.cross_entropy(model(x_adv), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += len(y)
    sync(device)
    return n


# --- memlib's step ---------------------------------------------------------------------------------

def memlib_epoch(model, opt, loader, ctx, amp, graphs):
    """One pass of ``loader`` through memlib's own epoch function, as ``memlib.train`` runs it (with its
    per-epoch CUDA graph recording when ``graphs``)."""
    train_epoch(model, opt, loader, METHODS["pgd_at"], ctx, amp, graphs)
    sync(next(model.parameters()).device)
    return len(loader.labels)


def mm_flops(device, dtype, size, reps=10, trials=3) -> float:
    """FLOP/s of ``size`` x ``size`` products: the best of ``trials`` timings of ``reps`` products each (the
    machine's limit; a single timing on this project's CPU came out up to 10% low, and the best makes the
    ratio achieved / torch.mm the conservative one)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(trials):
        sync(device)
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        best = max(best, 2 * size ** 3 * reps / (time.perf_counter() - t))
    return best


def step_flops(model, loader, ctx, amp, device) -> tuple[float, float]:
    """FLOPs per example of one memlib PGD-AT training step (attack + update), counted by torch's flop
    counter: (all, those of convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode
    x, y, idx = next(iter(loader))
    counter = FlopCounterMode(display=False)
    with counter:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            step = METHODS["pgd_at"](model, x, y, idx, ctx)
        step.loss.backward()
    model.zero_grad(set_to_none=True)
    by_op = counter.get_flop_counts().get("Global", {})
    conv = sum(n for op, n in by_op.items() if "convolution" in str(op))
    return counter.get_total_flops() / len(y), conv / len(y)


CONV_KERNELS = ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_convolution_pointwise",
                "aten::thnn_conv2d", "aten::_slow_conv2d_forward", "aten::_slow_conv2d_backward")


def conv_time_share(model, opt, loader, ctx, amp) -> float:
    """Share of one memlib pass's operator time (torch.profiler, self CPU time) spent in convolutions."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_epoch(model, opt, loader, METHODS["pgd_at"], ctx, amp, False)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if e.key in CONV_KERNELS) / total


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--width", type=float, default=None, help="default: 1.0 on CUDA, 0.125 on CPU")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--batches", type=int, default=None, help="batches per repetition (default: 4 CPU, 100 GPU)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader workers of the reference (2 on CUDA, 0 on CPU)")
    p.add_argument("--eval-n", type=int, default=None, help="test images for PGD-10 eval (default 512 CPU, 5000 GPU)")
    p.add_argument("--aa-n", type=int, default=None, help="test images for AutoAttack (default 32 CPU, 500 GPU)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own, all cores)")
    p.add_argument("--compile", default="", metavar="MODE",
                   help="also torch.compile memlib's model with this mode (default, reduce-overhead, max-autotune); "
                        "the compile time is reported apart, outside the timed repetitions")
    p.add_argument("--cpu-amp", action="store_true",
                   help="memlib with bf16 autocast on the CPU too (config key cpu_amp); reports bf16 torch.mm beside")
    p.add_argument("--no-graphs", action="store_true", help="eager memlib steps on CUDA (no CUDA graph replay)")
    p.add_argument("--no-fold", action="store_true",
                   help="memlib's attack without BatchNorm folded into the convolutions (config key fold_bn)")
    p.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto",
                   help="memlib's memory format: auto = memlib's own choice (memlib.runs.uses_channels_last)")
    p.add_argument("--eval-run", default="", metavar="RUN_DIR",
                   help="measure evaluation (PGD-10, AutoAttack) on this run's final weights (same model and "
                        "width, e.g. a quick-tier PGD-AT run) instead of the benchmark's barely trained model")
    p.add_argument("--data-path", default="", help="an ImageFolder root ({train,test}/<class>/*.png); default: "
                                                   "memlib's own choice (the offline CIFAR-10 copy, else torchvision)")
    p.add_argument("--data-dir", default="data", help="torchvision root and memlib's uint8 cache (config data_dir)")
    p.add_argument("--tag", default="", help="suffix of the result file names")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    width = args.width if args.width is not None else (1.0 if gpu else 0.125)
    batches = args.batches or (100 if gpu else 4)
    workers = args.workers if args.workers is not None else (2 if gpu else 0)
    eval_n = args.eval_n or (5000 if gpu else 512)
    aa_n = args.aa_n or (500 if gpu else 32)
    n_train = args.batch_size * batches
    if args.eval_run:  # before any compute: evaluation rates are only comparable on the benchmarked model
        run_cfg, _ = read_run(args.eval_run)
        if (run_cfg.model, run_cfg.width) != (args.model, width):
            p.error(f"--eval-run {Path(args.eval_run).name} is a {run_cfg.model} of width {run_cfg.width}; "
                    f"the benchmark's model is a {args.model} of width {width}")

    cfg = RunConfig(model=args.model, width=width, train_subset=0, progress=False, cpu_amp=args.cpu_amp,
                    fold_bn=not args.no_fold, channels_last=args.channels_last != "off", data_path=args.data_path,
                    data_dir=args.data_dir)
    amp = uses_amp(cfg, device)
    channels_last = args.channels_last == "on" or (args.channels_last == "auto" and uses_channels_last(cfg, device))
    source = run_dir_for(cfg)[2]  # the data's own label, as runs record it
    train_split, test_split = load_split(cfg, True), load_split(cfg, False)
    g = torch.Generator().manual_seed(0)
    ids = torch.randperm(len(train_split.labels), generator=g)[:n_train]
    images, labels = train_split.images[ids], train_split.labels[ids]

    import torchvision.transforms as T
    ref_ds = PILDataset(images.numpy(), labels.numpy(),
                        T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()]))
    ref_loader = torch.utils.data.DataLoader(ref_ds, batch_size=args.batch_size, shuffle=True, num_workers=workers,
                                             pin_memory=gpu, persistent_workers=workers > 0)

    def fresh_model(fast: bool):
        torch.manual_seed(0)
        model = build_model(args.model, width=width).to(device)
        if fast and channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    ref_model, ref_opt = fresh_model(False)
    mem_model, mem_opt = fresh_model(True)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    mem_loader = Loader(images.to(device), labels.to(device), args.batch_size, shuffle=True, augment=True,
                        generator=torch.Generator().manual_seed(0), memory_format=fmt)
    ctx = Context(cfg, epoch=1)
    eager_model = mem_model
    if args.compile:  # the step calls the compiled module; the optimizer holds the same parameters
        mem_model = torch.compile(eager_model, mode=None if args.compile == "default" else args.compile)

    graphs = gpu and not args.no_graphs

    # warm-up (cudnn autotuning, allocator, first-call overheads, compilation): one pass each
    torch.backends.cudnn.benchmark = True
    reference_epoch(ref_model, ref_opt, ref_loader, device, batches)
    t = time.perf_counter()
    memlib_epoch(mem_model, mem_opt, mem_loader, ctx, amp, graphs)
    warmup_s = time.perf_counter() - t

    ref_rates, mem_rates = [], []
    for r in range(args.reps):
        t = time.perf_counter()
        n = reference_epoch(ref_model, ref_opt, ref_loader, device, batches)
        ref_rates.append(n / (time.perf_counter() - t))
        t = time.perf_counter()
        n = memlib_epoch(mem_model, mem_opt, mem_loader, ctx, amp, graphs)
        mem_rates.append(n / (time.perf_counter() - t))
        print(f"rep {r + 1}/{args.reps}: reference {ref_rates[-1]:.1f} ex/s, memlib {mem_rates[-1]:.1f} ex/s",
              flush=True)
    ref_med, mem_med = statistics.median(ref_rates), statistics.median(mem_rates)

    flops_per_example, conv_flops_per_example = step_flops(eager_model, mem_loader, ctx, amp, device)
    conv_share = None if gpu else conv_time_share(mem_model, mem_opt, mem_loader, ctx, amp)
    mm_size = 8192 if gpu else 2048
    peak_fp32 = mm_flops(device, torch.float32, mm_size)
    peak_bf16 = mm_flops(device, torch.bfloat16, mm_size) if amp else None
    reference_peak = peak_bf16 if amp else peak_fp32  # the precision memlib computes in
    achieved = flops_per_example * mem_med
    # FLOP/s inside the convolutions: their FLOPs over the share of the step's time they take
    conv_flops = None if conv_share is None else conv_flops_per_example * mem_med / conv_share

    # evaluation throughput: the median of three passes after one that autotunes cuDNN for the batch shapes,
    # on the benchmark's model or (--eval-run) on a trained run's final weights, where AutoAttack's later
    # attacks have robust points to work on
    if args.eval_run:
        eval_model, _ = load_weights(args.eval_run, "final", device)
        eval_model = eval_model.to(memory_format=fmt)
    else:
        eval_model = eager_model.eval()
    test_ids = balanced_subset(test_split.labels, eval_n, seed=0)  # test sets on disk are sorted by class
    x_test, y_test = test_split.images[test_ids].to(device), test_split.labels[test_ids].to(device)
    eval_kw = dict(eps=EPS, alpha=ALPHA, batch_size=1024 if gpu else 512, amp=amp, memory_format=fmt,
                   fold_bn=cfg.fold_bn)
    pgd_rates = []
    for _ in range(4):
        sync(device)
        t = time.perf_counter()
        predict(eval_model, x_test, y_test, "pgd-10", **eval_kw)
        sync(device)
        pgd_rates.append(eval_n / (time.perf_counter() - t))
    pgd_rate = statistics.median(pgd_rates[1:])
    aa_ids = balanced_subset(test_split.labels, aa_n, seed=0)
    x_aa, y_aa = test_split.images[aa_ids].to(device), test_split.labels[aa_ids].to(device)
    accs = {spec: accuracy(eval_model, x_aa, y_aa, spec, **eval_kw) for spec in ("natural", "pgd-10")}
    aa_rate = None
    try:
        t = time.perf_counter()
        pred_aa = predict(eval_model, x_aa, y_aa, "autoattack", eps=EPS, alpha=ALPHA, batch_size=500,
                          fold_bn=cfg.fold_bn)
        sync(device)
        aa_rate = aa_n / (time.perf_counter() - t)
        accs["autoattack"] = (pred_aa == y_aa).float().mean().item()
    except Exception as exc:  # AutoAttack missing or failing: report, don't hide
        print(f"AutoAttack not measured: {type(exc).__name__}: {exc}")

    peak_mem = (torch.cuda.max_memory_allocated() / 2 ** 30 if gpu
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20)
    machine = (torch.cuda.get_device_name(device) if gpu else
               f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    result = {
        "device": str(device), "machine": machine, "torch": torch.__version__, "code_version": code_version(),
        "data": source,
        "model": f"{args.model} width {width}", "batch_size": args.batch_size, "batches_per_rep": batches,
        "reps": args.reps, "reference_workers": workers, "attack": "PGD-10 l-inf 8/255, step 2/255",
        "reference_examples_per_s": ref_rates, "memlib_examples_per_s": mem_rates,
        "reference_median": ref_med, "memlib_median": mem_med, "speedup": mem_med / ref_med,
        "memlib_train_flops_per_example": flops_per_example, "memlib_achieved_flops": achieved,
        "mm_flops_fp32": peak_fp32, "mm_flops_bf16": peak_bf16,
        "achieved_fraction_of_mm": achieved / reference_peak,
        "conv_flops_share": conv_flops_per_example / flops_per_example, "conv_time_share": conv_share,
        "conv_achieved_flops": conv_flops,
        "conv_fraction_of_mm": None if conv_flops is None else conv_flops / reference_peak,
        "eval_pgd10_examples_per_s": pgd_rate, "eval_n": eval_n,
        "eval_autoattack_examples_per_s": aa_rate, "autoattack_n": aa_n,
        "eval_weights": Path(args.eval_run).name if args.eval_run else "the benchmark's model",
        "eval_accuracy_on_autoattack_points": accs,
        "peak_memory_gib": peak_mem, "compile": args.compile or None, "cuda_graphs": graphs, "amp_bf16": amp,
        "fold_bn": cfg.fold_bn, "channels_last": channels_last,
        "memlib_warmup_s": warmup_s,
        "projected_200_epoch_pgd_at_hours": 200 * 50000 / mem_med / 3600,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = ("cuda" if gpu else f"cpu-{torch.get_num_threads()}thread") + (f"-{args.tag}" if args.tag else "")
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown(result))
    print(markdown(result))
    return result


def markdown(r: dict) -> str:
    peak = "bf16" if r["mm_flops_bf16"] else "fp32"
    rows = [
        ("machine", f"{r['machine']} ({r['device']}), torch {r['torch']}"
                    + (f", memlib {r['code_version']}" if r.get("code_version") else "")),
        ("setting", f"{r['model']}, batch {r['batch_size']}, {r['attack']}, {r['batches_per_rep']} batches x "
                    f"{r['reps']} reps, data: {r['data']}"),
        ("reference-style loop (median)", f"{r['reference_median']:.1f} examples/s"),
        ("memlib (median)", f"{r['memlib_median']:.1f} examples/s"
                            + (f" (torch.compile mode {r['compile']})" if r.get("compile") else "")
                            + (" (CUDA graph replay)" if r.get("cuda_graphs") else "")
                            + (" (bf16 autocast on the CPU)" if r.get("amp_bf16") and r["device"] == "cpu" else "")
                            + ("" if r.get("fold_bn", True) else " (BatchNorm not folded)")
                            + (", channels_last" if r.get("channels_last") else ", NCHW")),
        ("speed-up (ratio of medians)", f"**{r['speedup']:.2f}x**"),
        ("memlib model FLOPs per training example", f"{r['memlib_train_flops_per_example'] / 1e9:.3f} GFLOP"),
        ("memlib achieved", f"{r['memlib_achieved_flops'] / 1e9:.1f} GFLOP/s"),
        (f"torch.mm ({peak})", f"{(r['mm_flops_bf16'] or r['mm_flops_fp32']) / 1e9:.1f} GFLOP/s"),
        ("achieved / torch.mm", f"**{100 * r['achieved_fraction_of_mm']:.1f}%**"),
        *([("achieved / torch.mm fp32", f"{100 * r['memlib_achieved_flops'] / r['mm_flops_fp32']:.1f}%")]
          if r["mm_flops_bf16"] else []),
        *([("time in convolutions (profiled pass)",
            f"{100 * r['conv_time_share']:.1f}% of the step ({100 * r['conv_flops_share']:.1f}% of its FLOPs)"),
           ("FLOP/s inside the convolutions", f"{r['conv_achieved_flops'] / 1e9:.1f} GFLOP/s = "
            f"**{100 * r['conv_fraction_of_mm']:.1f}%** of torch.mm ({peak})")]
          if r.get("conv_time_share") else []),
        ("PGD-10 evaluation", f"{r['eval_pgd10_examples_per_s']:.1f} examples/s (n = {r['eval_n']})"),
        ("AutoAttack (standard) evaluation", "not measured" if r["eval_autoattack_examples_per_s"] is None else
         f"{r['eval_autoattack_examples_per_s']:.2f} examples/s (n = {r['autoattack_n']})"),
        *([("evaluated weights", r["eval_weights"]),
           (f"their accuracy on the {r['autoattack_n']} AutoAttack points",
            ", ".join(f"{k} {100 * v:.1f}%" for k, v in r["eval_accuracy_on_autoattack_points"].items()))]
          if "eval_weights" in r else []),
        ("peak memory", f"{r['peak_memory_gib']:.2f} GiB"),
        ("projected 200-epoch PGD-AT on 50,000 images", f"{r['projected_200_epoch_pgd_at_hours']:.1f} h"),
    ]
    return "| quantity | value |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows) + "\n"


if __name__ == "__main__":
    main()
