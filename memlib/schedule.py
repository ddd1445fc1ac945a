"""Learning-rate schedules: the learning rate of each epoch, and the epochs at which it drops."""

from __future__ import annotations

import math

from memlib.config import RunConfig


def lr_at(cfg: RunConfig, epoch: int) -> float:
    """Learning rate of a (1-based) epoch. multistep: decays after each milestone epoch (0.1 for epochs
    1-100, 0.01 for 101-150, 0.001 after, with the defaults); step: decays every ``lr_step_every``
    epochs; cosine: annealed per epoch from lr to 0; constant."""
    if cfg.lr_schedule == "multistep":
        return cfg.lr * cfg.lr_decay ** sum(epoch > m for m in cfg.lr_milestones)
    if cfg.lr_schedule == "step":
        return cfg.lr * cfg.lr_decay ** ((epoch - 1) // cfg.lr_step_every)
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / cfg.epochs))
    return cfg.lr


def lr_decays(cfg: RunConfig) -> list[int]:
    """Epochs whose learning rate drops in a step from the previous epoch's (multistep and step schedules; a
    cosine schedule decays every epoch and has none)."""
    if cfg.lr_schedule not in ("multistep", "step"):
        return []
    return [e for e in range(2, cfg.epochs + 1) if lr_at(cfg, e) < lr_at(cfg, e - 1)]
