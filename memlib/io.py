"""Atomic writes and safe checkpoint loading.

Every file memlib writes appears whole or not at all (written to a temporary file in the same folder,
flushed, then renamed). Checkpoints are read with ``torch.load(weights_only=True)``, which refuses any
pickle that would run code; damaged, truncated or foreign files raise ``CheckpointError`` with one line.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from memlib.config import MemlibError


CHECKPOINT_FORMAT = "memlib-checkpoint-1"  # written into every checkpoint, checked on loading


class CheckpointError(MemlibError):
    """A checkpoint that cannot be trusted: missing, corrupt, truncated, unsafe or from another run."""


def atomic_write_bytes(path: str | Path, data: bytes, *, compare: bool = True) -> None:
    """Write ``data`` to ``path`` whole or not at all; with ``compare``, a file that already holds exactly
    ``data`` is left untouched (same bytes, same modification time), so re-rendering unchanged results changes
    nothing. A failed write (a full disk, a read-only folder) leaves the old file as it was, removes its
    temporary file and raises an ``OSError`` that names ``path``."""
    path = Path(path)
    if compare and unchanged(path, data):
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # named by the file meant, not by the temporary one
        raise OSError(exc.errno, exc.strerror, exc.filename if exc.filename == str(path.parent) else str(path)) \
            from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: str | Path, default=None):
    """The JSON value in ``path``, or ``default`` (an empty dict) when it is missing or damaged: for the batch's
    own bookkeeping files (statuses, manifests), which a later execution rewrites."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {} if default is None else default


def unchanged(path: Path, data: bytes) -> bool:
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj, sort_keys: bool = True) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys, default=str) + "\n")


def atomic_save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Save a dict of tensors and plain Python values (no custom classes) atomically. Not compared with the
    file it replaces: a checkpoint is new each epoch, and reading back the last one (hundreds of MB at the
    paper's sizes) every epoch would cost more than it could save."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue(), compare=False)


def load_checkpoint(path: str | Path, expect_run_id: str | None = None) -> dict:
    """Load a checkpoint without executing any pickled code; check it belongs to ``expect_run_id``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if "GLOBAL" in str(exc) or "Unsupported global" in str(exc):
            raise CheckpointError(f"refusing to load {path}: it asks to import code or objects that are not plain "
                                  f"tensors (possibly malicious); nothing was executed") from None
        raise CheckpointError(f"checkpoint {path} is corrupt, truncated or not a torch checkpoint "
                              f"({type(exc).__name__}); it was not loaded") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a memlib checkpoint")
    if expect_run_id is not None and state.get("run_id") != expect_run_id:
        raise CheckpointError(f"{path} belongs to run {state.get('run_id')!r}, not {expect_run_id!r} "
                              f"(a checkpoint of another config)")
    return state


# --- committed weights: safetensors (tensors and text metadata only, nothing to unpickle) ---------------------

def save_weights_file(path: str | Path, state: dict, source_sha256: str) -> None:
    """Write the model tensors of checkpoint ``state`` as a safetensors file (atomically), with its run id and
    epoch, and the sha256 of the checkpoint it came from: results cached on that checkpoint stay valid for it."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in state["model"].items()}
    meta = {"format": CHECKPOINT_FORMAT, "run_id": str(state.get("run_id")), "epoch": str(state.get("epoch")),
            "source_sha256": source_sha256}
    atomic_write_bytes(path, _canonical_safetensors(save(tensors, metadata=meta)))


def _canonical_safetensors(data: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted: the library writes its metadata in a hash
    map's order, which changes from one process to the next, so re-exporting would change the bytes."""
    import json
    import struct

    (size,) = struct.unpack("<Q", data[:8])
    header = json.dumps(json.loads(data[8:8 + size]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the data section stays 8-byte aligned, as the library writes it
    return struct.pack("<Q", len(header)) + header + data[8 + size:]


def weights_file_metadata(path: str | Path) -> dict:
    """The text metadata of a safetensors weights file (``save_weights_file``), read without its tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({type(exc).__name__})") from None


def load_weights_file(path: str | Path, expect_run_id: str | None = None) -> dict:
    """A safetensors weights file as a checkpoint state (``{"model", "epoch", "run_id"}``), checked to belong to
    ``expect_run_id``."""
    from safetensors.torch import load_file

    meta = weights_file_metadata(path)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a memlib weights file")
    if expect_run_id is not None and meta.get("run_id") != expect_run_id:
        raise CheckpointError(f"{path} belongs to run {meta.get('run_id')!r}, not {expect_run_id!r}")
    epoch = meta.get("epoch")
    return {"format": CHECKPOINT_FORMAT, "model": load_file(str(path)), "run_id": meta.get("run_id"),
            "epoch": int(epoch) if epoch and epoch.isdigit() else None, "source_sha256": meta.get("source_sha256")}


# --- the store behind ``runs.Run.cached``: results keyed by their settings, each with its weights' digest ---
# JSON: {key: value}; a dict value carries its digest as "checkpoint_sha256", other values in the map
# "__weights__". An .npz file: {key: array, "checkpoint|<key>": digest}, plus the run-level arrays its writer
# adds (the format adv_losses.npz always had).
DIGESTS, DIGEST_FIELD = "__weights__", "checkpoint_sha256"


def read_store(path: str | Path) -> tuple[dict, dict]:
    """({key: value}, {key: digest of the weights it was computed on}) of a result file; empty when absent."""
    path = Path(path)
    if not path.is_file():
        return {}, {}
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            values = {k: f[k] for k in f.files if not k.startswith("checkpoint|")}
            digests = {k.split("|", 1)[1]: str(f[k]) for k in f.files if k.startswith("checkpoint|")}
        return values, {k: d for k, d in digests.items() if d and d != "None"}
    try:
        values = json.loads(path.read_text())
    except ValueError:
        raise MemlibError(f"{path} is damaged; delete it (its results are computed again)") from None
    digests = values.pop(DIGESTS, {})
    digests.update({k: v[DIGEST_FIELD] for k, v in values.items() if isinstance(v, dict) and v.get(DIGEST_FIELD)})
    return values, digests


def write_store(path: str | Path, entries: dict, digests: dict) -> None:
    """Add ``entries`` (with their ``digests``) to a result file atomically, keeping the other keys as they are
    on disk now (another process may have written some meanwhile)."""
    path = Path(path)
    values, known = read_store(path)
    values.update(entries)
    known.update({k: d for k, d in digests.items() if d})
    if path.suffix == ".npz":
        atomic_save_npz(path, **values, **{f"checkpoint|{k}": np.array(d) for k, d in known.items()})
        return
    for key, value in values.items():
        if isinstance(value, dict) and key in known:
            values[key] = {**value, DIGEST_FIELD: known.pop(key)}
    atomic_write_json(path, {**values, **({DIGESTS: known} if known else {})})


def file_digest(path: str | Path) -> str:
    """The sha256 of a file (hex), read in 1 MiB blocks: which checkpoint a cached measurement was made on."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
