"""Shared fixtures: small data sets made by the tests, and tiny run configs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from memlib.config import RunConfig
from memlib.data import CIFAR10_CLASSES, find_offline_cifar10

# The tests' workloads are tiny: one thread per process avoids OpenMP oversubscription stalls (with many
# threads a busy 2-core machine slows them tenfold). Subprocesses inherit it, so in-process and subprocess
# runs compute with the same thread count and can be compared exactly.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~20 s on 2 CPU cores")


def write_imagefolder(root: Path, classes, per_class: dict[str, int], seed: int = 0) -> Path:
    """A small ImageFolder tree of random 32x32 PNGs whose colour depends on the class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = np.full((32, 32, 3), 20 * c, dtype=np.int64)
                img = np.clip(base + rng.integers(0, 60, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{i:04d}.png")
    return root


@pytest.fixture(scope="module")
def one_thread():
    """Tiny CPU workloads: one intra-op thread avoids OpenMP oversubscription stalls on busy machines."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    """A CIFAR-10-shaped ImageFolder with 12 train and 6 test images per class."""
    return write_imagefolder(tmp_path_factory.mktemp("tiny-cifar10"), CIFAR10_CLASSES, {"train": 12, "test": 6})


@pytest.fixture
def tiny_cfg(tiny_folder, tmp_path):
    """A tiny PGD-AT run on the tiny ImageFolder; seconds on a CPU. On the CPU also where a GPU is present:
    these tests compare numbers exactly; tests/test_cuda.py covers the GPU (``device="cuda"``)."""
    def make(**changes) -> RunConfig:
        values = dict(device="cpu", data_source="imagefolder", data_path=str(tiny_folder),
                      data_dir=str(tmp_path / "data"),
                      out_dir=str(tmp_path / "runs"), model="resnet18", width=0.0625, epochs=3, batch_size=32,
                      steps=2, eval_steps=2, train_subset=60, test_subset=30, lr=0.05, lr_milestones=[2],
                      progress=False)
        values.update(changes)
        return RunConfig(**values)
    return make


@pytest.fixture(scope="session")
def offline_cifar10() -> Path:
    path = find_offline_cifar10()
    if path is None:
        pytest.skip("the offline CIFAR-10 copy (shared/data/cifar10-jpeg) is not present")
    return path
