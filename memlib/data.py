"""Data sets as uint8 tensors on the device, seeded subsets and label noise, a vectorized loader.

Sources: torchvision (CIFAR-10, CIFAR-100, SVHN; downloaded when allowed) and an ImageFolder copy
(``{train,test}/<class>/*.jpg``), such as the offline JPEG copy of CIFAR-10 that sits in the project's
``shared/data/cifar10-jpeg`` folder, found automatically. Decoded images are cached once as uint8
``.npz`` files. Batches are float in [0, 1] with their example indices; random crop (pad 4) and
horizontal flip are drawn per example and applied to the whole batch at once on the device.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from memlib.config import MemlibError, RunConfig
from memlib.io import atomic_save_npz

NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "svhn": 10}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
OFFLINE_CIFAR10 = Path("shared") / "data" / "cifar10-jpeg"
OFFLINE_ENV = "MEMLIB_CIFAR10_JPEG"


class DataError(MemlibError):
    """A data set that cannot be found, read or subset as asked."""


@dataclass
class Split:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of one split, with where they came from."""

    images: torch.Tensor
    labels: torch.Tensor
    source: str  # e.g. "torchvision:cifar10" or "imagefolder:cifar10-jpeg (JPEG-degraded offline copy)"


@dataclass
class Data:
    """What a run trains and evaluates on. Indices into ``train_*`` are the example ids used everywhere."""

    train_images: torch.Tensor  # (N, 3, 32, 32) uint8 on the device
    train_labels: torch.Tensor  # (N,) labels trained on (noisy when noise_rate > 0)
    train_true_labels: torch.Tensor  # (N,) the data set's labels
    train_ids: torch.Tensor  # (N,) position of each example in the full training split
    test_images: torch.Tensor
    test_labels: torch.Tensor
    test_ids: torch.Tensor
    num_classes: int
    source: str

    @property
    def noisy_mask(self) -> torch.Tensor:
        return self.train_labels != self.train_true_labels


# --- finding and reading the data -----------------------------------------------------------------

def find_offline_cifar10(start: Path | None = None) -> Path | None:
    """The offline CIFAR-10 ImageFolder copy: ``$MEMLIB_CIFAR10_JPEG``, else ``shared/data/cifar10-jpeg``
    in the current folder, the package's folder or any of their parents."""
    env = os.environ.get(OFFLINE_ENV)
    if env:
        return Path(env) if _is_imagefolder(Path(env)) else None
    roots = [Path(start or Path.cwd()).resolve(), Path(__file__).resolve().parent]
    for root in roots:
        for parent in (root, *root.parents):
            candidate = parent / OFFLINE_CIFAR10
            if _is_imagefolder(candidate):
                return candidate
    return None


def _is_imagefolder(path: Path) -> bool:
    return (path / "train").is_dir() and (path / "test").is_dir()


def _torchvision_present(dataset: str, root: Path) -> bool:
    marker = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python", "svhn": "train_32x32.mat"}[dataset]
    return (root / marker).exists()


def resolve_source(cfg: RunConfig) -> tuple[str, Path]:
    """Decide where the data comes from, before anything is read: ("torchvision" | "imagefolder", path)."""
    root = Path(cfg.data_dir)
    if cfg.data_source == "torchvision":
        return "torchvision", root
    if cfg.data_source == "imagefolder" or cfg.data_path:
        path = Path(cfg.data_path) if cfg.data_path else find_offline_cifar10()
        if path is None or not _is_imagefolder(path):
            raise DataError(f"no ImageFolder data at {cfg.data_path or 'shared/data/cifar10-jpeg'}: it needs "
                            f"train/<class>/*.jpg and test/<class>/*.jpg")
        return "imagefolder", path
    if _torchvision_present(cfg.dataset, root):
        return "torchvision", root
    if cfg.dataset == "cifar10":
        offline = find_offline_cifar10()
        if offline is not None:
            return "imagefolder", offline
    return "torchvision", root


def source_label(kind: str, path: Path, dataset: str) -> str:
    if kind == "torchvision":
        return f"torchvision:{dataset}"
    note = " (JPEG-degraded offline copy)" if path.name == "cifar10-jpeg" else ""
    return f"imagefolder:{path.name}{note}"


def load_split(cfg: RunConfig, train: bool) -> Split:
    """Read one split as uint8 (cached in ``data_dir/cache``)."""
    kind, path = resolve_source(cfg)
    split = "train" if train else "test"
    if kind == "imagefolder":
        images, labels = _cached(cfg, f"imagefolder-{_folder_key(path / split)}-{split}",
                                 lambda: _read_imagefolder(path / split, cfg.dataset))
    else:
        images, labels = _cached(cfg, f"torchvision-{cfg.dataset}-{split}",
                                 lambda: _read_torchvision(cfg, train))
    return Split(torch.from_numpy(images), torch.from_numpy(labels).long(), source_label(kind, path, cfg.dataset))


def _cached(cfg: RunConfig, key: str, read):
    cache = Path(cfg.data_dir) / "cache" / f"{key}.npz"
    if cache.exists():
        try:
            with np.load(cache, allow_pickle=False) as f:
                return f["images"], f["labels"]
        except Exception:  # a damaged cache is rebuilt, never trusted
            cache.unlink(missing_ok=True)
    images, labels = read()
    atomic_save_npz(cache, images=images, labels=labels)
    return images, labels


def _folder_key(folder: Path) -> str:
    """A fingerprint of an ImageFolder split (names and sizes of its files), once per process and state of its
    folders (their modification times change when a file is added, removed or renamed): listing 50,000 files
    costs more than reading the uint8 cache it names."""
    try:
        with os.scandir(folder) as entries:
            subdirs = sorted(e.name for e in entries if e.is_dir())
        mtimes = tuple(os.stat(folder / d).st_mtime_ns for d in ("", *subdirs))
    except OSError as exc:
        raise DataError(f"cannot list {folder}: {exc.strerror}") from None
    return _listing_key(folder, tuple(subdirs), mtimes)


@functools.lru_cache(maxsize=16)
def _listing_key(folder: Path, subdirs: tuple, mtimes: tuple) -> str:
    listing = []
    for sub in subdirs:  # os.scandir: 4x faster than Path.glob("*/*"), the same listing
        with os.scandir(folder / sub) as entries:
            listing += [(f"{sub}/{e.name}", e.stat().st_size) for e in entries if e.is_file()]
    return hashlib.sha256(repr(sorted(listing)).encode()).hexdigest()[:12]


def data_digest(cfg: RunConfig) -> str | None:
    """What the data of ``cfg`` is, by content rather than by its folder's name: for an ImageFolder the names
    and sizes of its files (half a second for the 60,000 images of the offline copy, once per process), for
    torchvision the sha256 of its files (cached in ``data_dir/cache`` by path, size and modification time).
    None when the torchvision files are not there yet (before a download)."""
    kind, path = resolve_source(cfg)
    if kind == "imagefolder":
        return "files:" + hashlib.sha256(f"{_folder_key(path / 'train')}|{_folder_key(path / 'test')}".encode()
                                         ).hexdigest()[:16]
    files = _torchvision_files(cfg.dataset, path)
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}:{_file_sha256(f, Path(cfg.data_dir) / 'cache' / 'digests.json')}|".encode())
    return "sha256:" + h.hexdigest()[:16]


def _torchvision_files(dataset: str, root: Path) -> list[Path]:
    if dataset == "svhn":
        return [f for f in (root / "train_32x32.mat", root / "test_32x32.mat") if f.is_file()]
    folder = root / {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[dataset]
    return sorted(f for f in folder.iterdir() if f.is_file()) if folder.is_dir() else []


def _file_sha256(path: Path, cache: Path) -> str:
    """sha256 of a data file, remembered in the JSON file ``cache`` by its path, size and modification time."""
    import json

    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    try:
        known = json.loads(cache.read_text()) if cache.is_file() else {}
    except (OSError, ValueError):
        known = {}
    if key not in known:
        from memlib.io import atomic_write_json, file_digest

        known[key] = file_digest(path)
        try:
            atomic_write_json(cache, known)
        except OSError:  # a read-only data folder: computed again next time
            pass
    return known[key]


def _read_imagefolder(folder: Path, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{folder} has no class folders")
    if dataset in NUM_CLASSES and len(classes) != NUM_CLASSES[dataset]:
        raise DataError(f"{folder} has {len(classes)} class folders; {dataset} needs {NUM_CLASSES[dataset]}")
    if dataset == "cifar10" and tuple(classes) != CIFAR10_CLASSES:
        raise DataError(f"{folder} class folders {classes} are not CIFAR-10's {list(CIFAR10_CLASSES)}")
    files, labels = [], []
    for label, name in enumerate(classes):
        for f in sorted((folder / name).iterdir()):
            if f.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"):
                files.append(f)
                labels.append(label)
        if not labels or labels[-1] != label:  # a class nothing can be learned or tested on
            raise DataError(f"{folder / name} holds no images (.jpg, .jpeg, .png, .bmp); add its images or use the "
                            f"full data set")
    images = np.empty((len(files), 3, 32, 32), dtype=np.uint8)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                arr = np.asarray(im.convert("RGB"))
        except (OSError, ValueError, SyntaxError) as exc:  # PIL: unidentified, truncated or damaged files
            raise DataError(f"{f} is not a readable image ({type(exc).__name__}); replace or remove it, then run "
                            f"the same command again") from None
        if arr.shape != (32, 32, 3):
            raise DataError(f"{f} is {arr.shape[1]}x{arr.shape[0]}; memlib expects 32x32 images")
        images[i] = arr.transpose(2, 0, 1)
    return images, np.asarray(labels, dtype=np.int64)


def _read_torchvision(cfg: RunConfig, train: bool) -> tuple[np.ndarray, np.ndarray]:
    import torchvision

    root = Path(cfg.data_dir)
    cls = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100,
           "svhn": torchvision.datasets.SVHN}[cfg.dataset]
    kwargs = {"split": "train" if train else "test"} if cfg.dataset == "svhn" else {"train": train}
    try:
        ds = cls(str(root), download=cfg.download, **kwargs)
    except Exception as exc:  # missing files, no network, corrupt archive
        hint = ("put the offline copy at shared/data/cifar10-jpeg or pass data_source=imagefolder "
                "data_path=DIR, " if cfg.dataset == "cifar10" else "")
        how = "download failed" if cfg.download else "download=false"
        raise DataError(f"{cfg.dataset} not found in {root} and {how} ({type(exc).__name__}); {hint}or place the "
                        f"torchvision files there (torchvision.datasets.{cls.__name__}(root={str(root)!r}, "
                        f"download=True) on a machine with internet)") from None
    if cfg.dataset == "svhn":
        images, labels = np.asarray(ds.data, dtype=np.uint8), np.asarray(ds.labels)
    else:
        images, labels = np.asarray(ds.data, dtype=np.uint8).transpose(0, 3, 1, 2), np.asarray(ds.targets)
    return np.ascontiguousarray(images), labels.astype(np.int64)


# --- subsets and label noise ------------------------------------------------------------------------

def balanced_subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Indices of ``n`` examples, as class-balanced as the data allows, chosen with a seeded permutation.
    The result is sorted. ``n = 0`` means all examples."""
    total = len(labels)
    if n < 0:
        raise DataError(f"a subset of {n} examples: n must be >= 0 (0 = all)")
    if n == 0 or n == total:
        return torch.arange(total)
    if n > total:
        raise DataError(f"subset of {n} examples is larger than the data set ({total})")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(total, generator=g)
    lab = labels[perm]
    rank = torch.empty(total, dtype=torch.long)  # rank of each permuted example within its class
    for c in lab.unique():
        where = (lab == c).nonzero().squeeze(1)
        rank[where] = torch.arange(len(where))
    order = torch.argsort(rank * (int(labels.max()) + 1) + lab, stable=True)  # round-robin over classes
    return perm[order[:n]].sort().values


def symmetric_noise(labels: torch.Tensor, rate: float, num_classes: int, seed: int) -> torch.Tensor:
    """Symmetric label noise as in the authors' code: each label is redrawn from the row of
    ``P = (r / C) * ones(C, C) + (1 - r) * I`` (so at r = 1 labels are uniform and may equal the truth)."""
    if rate == 0:
        return labels.clone()
    C = num_classes
    P = np.full((C, C), rate / C) + (1 - rate) * np.eye(C)
    cdf = np.cumsum(P, axis=1)
    cdf[:, -1] = 1.0
    u = np.random.default_rng(seed).random(len(labels))
    new = (u[:, None] >= cdf[labels.numpy()]).sum(axis=1)
    return torch.from_numpy(new).long()


def prepare_data(cfg: RunConfig, device: torch.device | str = "cpu") -> Data:
    """Load, subset and corrupt the data of a run, and put it on ``device`` as uint8."""
    train, test = load_split(cfg, True), load_split(cfg, False)
    num_classes = NUM_CLASSES[cfg.dataset]
    if cfg.train_subset > len(train.labels):
        raise DataError(f"train_subset={cfg.train_subset} is larger than the {cfg.dataset} training set "
                        f"({len(train.labels)})")
    if cfg.test_subset > len(test.labels):
        raise DataError(f"test_subset={cfg.test_subset} is larger than the {cfg.dataset} test set "
                        f"({len(test.labels)})")
    if cfg.train_eval_subset > (cfg.train_subset or len(train.labels)):
        raise DataError(f"train_eval_subset={cfg.train_eval_subset} is larger than the training examples of the run "
                        f"({cfg.train_subset or len(train.labels)})")
    train_ids = balanced_subset(train.labels, cfg.train_subset, cfg.data_seed)
    test_ids = balanced_subset(test.labels, cfg.test_subset, cfg.data_seed + 1)
    true = train.labels[train_ids]
    noisy = symmetric_noise(true, cfg.noise_rate, num_classes, cfg.data_seed + 2)
    return Data(train.images[train_ids].to(device), noisy.to(device), true.to(device), train_ids,
                test.images[test_ids].to(device), test.labels[test_ids].to(device), test_ids, num_classes,
                train.source)


# --- batches --------------------------------------------------------------------------------------

def augment(images: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop (zero padding ``pad``) and horizontal flip, drawn per example, for a uint8 or float
    batch (B, C, H, W); the random numbers come from the CPU ``generator`` (same on every device)."""
    B, C, H, W = images.shape
    shifts = torch.randint(0, 2 * pad + 1, (2, B), generator=generator).to(images.device)
    flips = (torch.rand(B, generator=generator) < 0.5).to(images.device)
    padded = F.pad(images, (pad, pad, pad, pad))
    rows = (shifts[0][:, None] + torch.arange(H, device=images.device))[:, None, :, None]
    cols = (shifts[1][:, None] + torch.arange(W, device=images.device))
    cols = torch.where(flips[:, None], cols.flip(1), cols)[:, None, None, :]
    batch = torch.arange(B, device=images.device)[:, None, None, None]
    chan = torch.arange(C, device=images.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


class Loader:
    """Batches ``(x, y, idx)`` from uint8 images on the device: x float in [0, 1], idx the example ids.

    Shuffling and augmentation draw from ``generator`` (a seeded CPU ``torch.Generator`` whose state a
    checkpoint saves), so an epoch is the same on every run and after a resume.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, shuffle: bool = False,
                 augment: bool = False, generator: torch.Generator | None = None,
                 memory_format: torch.memory_format = torch.contiguous_format):
        if (shuffle or augment) and generator is None:
            raise ValueError("shuffle/augment need a generator")
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.shuffle, self.augment, self.generator = shuffle, augment, generator
        self.memory_format = memory_format

    def __len__(self) -> int:
        return (len(self.labels) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.images.device)
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            x = self.images[idx]
            if self.augment:
                x = augment(x, self.generator)
            x = x.float().div_(255).contiguous(memory_format=self.memory_format)
            yield x, self.labels[idx], idx
