"""Data: the offline CIFAR-10 copy, torchvision loaders on files the tests make, caching, subsets,
label noise and the on-device loader with per-example augmentation."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from memlib import data as D
from memlib.config import RunConfig
from memlib.data import DataError, Loader, augment, balanced_subset, load_split, prepare_data, symmetric_noise


# --- the real offline copy ------------------------------------------------------------------------

def test_offline_copy_counts_and_classes(offline_cifar10):
    for split, per_class in (("train", 5000), ("test", 1000)):
        classes = sorted(p.name for p in (offline_cifar10 / split).iterdir())
        assert tuple(classes) == D.CIFAR10_CLASSES
        for name in classes:
            assert len(list((offline_cifar10 / split / name).glob("*.jpg"))) == per_class


def test_offline_copy_is_found_and_read(offline_cifar10, tmp_path):
    cfg = RunConfig(data_dir=str(tmp_path))  # auto source, no torchvision files in tmp_path
    kind, path = D.resolve_source(cfg)
    assert kind == "imagefolder" and path.resolve() == offline_cifar10.resolve()
    test = load_split(cfg, train=False)
    assert test.images.shape == (10000, 3, 32, 32) and test.images.dtype == torch.uint8
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert "cifar10-jpeg" in test.source and "JPEG" in test.source
    assert 60 < test.images.float().mean() < 180  # real photographs, not blank images
    assert (tmp_path / "cache").is_dir()


# --- ImageFolder and cache ------------------------------------------------------------------------

def test_imagefolder_split_and_cache(tiny_folder, tmp_path, monkeypatch):
    cfg = RunConfig(data_source="imagefolder", data_path=str(tiny_folder), data_dir=str(tmp_path))
    first = load_split(cfg, train=True)
    assert first.images.shape == (120, 3, 32, 32) and first.labels.tolist() == sorted(first.labels.tolist())
    assert torch.bincount(first.labels).tolist() == [12] * 10
    caches = list((tmp_path / "cache").glob("*.npz"))
    assert len(caches) == 1

    def no_read(*a, **k):
        raise AssertionError("the cache should have been used")
    monkeypatch.setattr(D, "_read_imagefolder", no_read)
    second = load_split(cfg, train=True)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)

    caches[0].write_bytes(b"damaged")  # a damaged cache is rebuilt, never trusted
    monkeypatch.undo()
    third = load_split(cfg, train=True)
    assert torch.equal(first.images, third.images)


def test_missing_imagefolder_is_one_line(tmp_path):
    cfg = RunConfig(data_source="imagefolder", data_path=str(tmp_path / "none"), data_dir=str(tmp_path))
    with pytest.raises(DataError) as info:
        load_split(cfg, train=True)
    assert "\n" not in str(info.value) and "train/<class>" in str(info.value)


# --- torchvision loaders on small files made here --------------------------------------------------

def _fake_cifar100(root: Path, n: int = 30) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("train", "test"):
        entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "fine_labels": list(range(n)),
                 "coarse_labels": [0] * n}
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)]}))


def test_torchvision_cifar100_layout(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    _fake_cifar100(tmp_path)
    cfg = RunConfig(dataset="cifar100", data_dir=str(tmp_path), download=False)
    assert D.resolve_source(cfg)[0] == "torchvision"
    split = load_split(cfg, train=True)
    raw = pickle.loads((tmp_path / "cifar-100-python" / "train").read_bytes())["data"].reshape(-1, 3, 32, 32)
    assert torch.equal(split.images, torch.from_numpy(raw)) and split.labels.tolist() == list(range(30))
    assert split.source == "torchvision:cifar100"


def test_torchvision_svhn_layout(tmp_path, monkeypatch):
    import scipy.io
    import torchvision.datasets.svhn as tv_svhn
    monkeypatch.setattr(tv_svhn, "check_integrity", lambda *a, **k: True)
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (32, 32, 3, 20), dtype=np.uint8)
    y = np.array([[10], [1], [2], [3], [4], [5], [6], [7], [8], [9]] * 2, dtype=np.uint8)
    for name in ("train_32x32.mat", "test_32x32.mat"):
        scipy.io.savemat(tmp_path / name, {"X": X, "y": y})
    cfg = RunConfig(dataset="svhn", data_dir=str(tmp_path), download=False)
    split = load_split(cfg, train=False)
    assert split.images.shape == (20, 3, 32, 32)
    assert torch.equal(split.images[3], torch.from_numpy(X[..., 3].transpose(2, 0, 1)))
    assert split.labels[:3].tolist() == [0, 1, 2]  # SVHN's digit 0 is stored as 10


def test_missing_dataset_without_download_says_where(tmp_path):
    cfg = RunConfig(dataset="cifar100", data_dir=str(tmp_path), download=False)
    with pytest.raises(DataError) as info:
        load_split(cfg, train=True)
    msg = str(info.value)
    assert "\n" not in msg and "cifar100 not found in" in msg and "download=True" in msg


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    import urllib.error
    import torchvision.datasets.cifar as tv_cifar

    def offline(*a, **k):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    monkeypatch.setenv(D.OFFLINE_ENV, str(tmp_path / "no-offline-copy"))
    cfg = RunConfig(dataset="cifar10", data_dir=str(tmp_path), download=True)
    with pytest.raises(DataError) as info:
        load_split(cfg, train=True)
    msg = str(info.value)
    assert "\n" not in msg and "download failed" in msg and "shared/data/cifar10-jpeg" in msg


# --- subsets and label noise ------------------------------------------------------------------------

def test_balanced_subset_is_balanced_seeded_and_bounded():
    labels = torch.arange(10).repeat_interleave(100)
    ids = balanced_subset(labels, 250, seed=3)
    counts = torch.bincount(labels[ids], minlength=10).tolist()
    assert sum(counts) == 250 and max(counts) - min(counts) <= 1
    assert len(set(ids.tolist())) == 250
    assert torch.equal(ids, balanced_subset(labels, 250, seed=3))
    assert not torch.equal(ids, balanced_subset(labels, 250, seed=4))
    assert torch.equal(balanced_subset(labels, 0, seed=0), torch.arange(1000))
    with pytest.raises(DataError):
        balanced_subset(labels, 1001, seed=0)


def test_balanced_subset_with_imbalanced_classes():
    labels = torch.tensor([0] * 5 + [1] * 100 + [2] * 100)
    counts = torch.bincount(labels[balanced_subset(labels, 60, seed=0)]).tolist()
    assert counts == [5, 28, 27] or counts == [5, 27, 28]


def test_subset_larger_than_dataset(tiny_cfg):
    with pytest.raises(DataError) as info:
        prepare_data(tiny_cfg(train_subset=500))
    assert "train_subset=500 is larger than the cifar10 training set (120)" in str(info.value)


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8, 1.0])
def test_observed_noise_rate(rate):
    C, n = 10, 50000
    true = torch.arange(C).repeat(n // C)
    noisy = symmetric_noise(true, rate, C, seed=1)
    changed = (noisy != true).float().mean().item()
    expected = rate * (C - 1) / C  # a redrawn label equals the true one with probability 1/C
    sd = (expected * (1 - expected) / n) ** 0.5
    assert abs(changed - expected) < 4 * sd
    # the new labels of changed examples are uniform over the other classes
    diff = (noisy - true) % C
    counts = torch.bincount(diff[noisy != true], minlength=C)[1:].float()
    assert (counts / counts.mean() - 1).abs().max() < 0.1
    assert torch.equal(noisy, symmetric_noise(true, rate, C, seed=1))


def test_random_labels_are_uniform_and_zero_noise_is_identity():
    true = torch.zeros(20000, dtype=torch.long)
    noisy = symmetric_noise(true, 1.0, 10, seed=0)
    freq = torch.bincount(noisy, minlength=10).float() / len(noisy)
    assert (freq - 0.1).abs().max() < 0.01
    assert torch.equal(symmetric_noise(true, 0.0, 10, seed=0), true)


# --- loader and augmentation ------------------------------------------------------------------------

def _images(n=50):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)


def test_loader_covers_every_example_once_and_is_deterministic():
    images, labels = _images(), torch.arange(50) % 10

    def epoch(seed):
        loader = Loader(images, labels, 16, shuffle=True, augment=True, generator=torch.Generator().manual_seed(seed))
        return list(loader)
    a, b, c = epoch(0), epoch(0), epoch(1)
    ids = torch.cat([idx for _, _, idx in a])
    assert sorted(ids.tolist()) == list(range(50)) and len(a) == 4
    for (xa, ya, ia), (xb, yb, ib) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ia, ib) and torch.equal(ya, labels[ia])
        assert xa.dtype == torch.float32 and 0 <= xa.min() and xa.max() <= 1
    assert not torch.equal(torch.cat([i for _, _, i in a]), torch.cat([i for _, _, i in c]))


def test_loader_without_augmentation_returns_the_images():
    images, labels = _images(), torch.arange(50) % 10
    x, y, idx = next(iter(Loader(images, labels, 50)))
    assert torch.equal(idx, torch.arange(50)) and torch.allclose(x * 255, images.float())


def test_augmentation_is_a_per_example_crop_and_flip():
    img = _images(1).repeat(64, 1, 1, 1)
    out = augment(img, torch.Generator().manual_seed(0))
    assert out.shape == img.shape and out.dtype == torch.uint8
    distinct = {tuple(o.flatten()[:64].tolist()) for o in out}
    assert len(distinct) > 20  # each example gets its own crop/flip
    padded = F.pad(img[0], (4, 4, 4, 4))
    candidates = [padded[:, r:r + 32, c:c + 32] for r in range(9) for c in range(9)]
    candidates += [cand.flip(2) for cand in candidates]
    for o in out[:16]:
        assert any(torch.equal(o, cand) for cand in candidates)
    flipped = sum(any(torch.equal(o, cand) for cand in candidates[81:]) and
                  not any(torch.equal(o, cand) for cand in candidates[:81]) for o in out)
    assert 10 < flipped < 54  # about half are flipped
