"""What defines a Hopfield benchmark run: :class:`HopfieldConfig`, the per-source defaults, the
paper's setting and how a configuration departs from it.

Kept apart from the experiment so that the command line, the sparse study and resuming agree on
one definition of a run (:meth:`HopfieldConfig.identity` decides whether saved modes are reused).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pyg_rbp.tasks.hopfield.data import PATTERN_SOURCES
from pyg_rbp.tasks.hopfield.graphs import TOPOLOGIES
from pyg_rbp.tasks.hopfield.memory import LR_SCHEDULES, OPTIMIZERS, TRAIN_INPUTS

# Defaults that depend on the pattern source: the paper's network for MNIST, a small one for
# the embedded 8x8 digits. `None` in a HopfieldConfig field means "take it from here".
# MNIST: the paper's network, loss, optimiser (Adam, L1), test (50% of on pixels off), T = 50
# and K = 20, with a training recipe that makes the memory complete erased digits (the paper's
# recipe, clean inputs at lr 1e-3 for 1000 steps, recalls 0 of 10; see README):
#   - train_input "corrupted": fresh random switch-offs at the test's level (a denoising
#     objective); on clean inputs the best map is a copy of the input, which never completes.
#   - a = 0.5: the damped update h <- h/2 + W s(bh) has the same fixed points as the paper's
#     a = 1 with W doubled, but converges where the undamped synchronous update starts to
#     oscillate once the weights grow (measured: relative residual 0.06 after 50 updates).
#   - Adam lr 1.5e-3 with cosine annealing over 3000 epochs (one step per epoch).
# Digits: the 8x8 images have only about 25 "on" pixels: with half of them switched off, the
# nearest stored pattern is already the wrong one for 2 of the 10 test images, so their default
# test switches off 25% (every image then still has a unique nearest pattern); the memory is
# trained on fresh random corruptions of that level (a denoising objective), with a larger,
# annealed learning rate that suits the smaller network.
SOURCE_DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist": {"hidden": 1024, "epochs": 3000, "lr": 1.5e-3, "lr_schedule": "cosine", "a": 0.5,
              "optimizer": "adam", "train_input": "corrupted", "corrupt": 0.5},
    "digits": {"hidden": 128, "epochs": 2000, "lr": 3e-2, "lr_schedule": "cosine", "a": 1.0,
               "optimizer": "adam", "train_input": "corrupted", "corrupt": 0.25},
}


@dataclass
class HopfieldConfig:
    """Everything that defines a Hopfield benchmark run (and decides whether results resume).

    ``None`` fields take the per-source defaults of :data:`SOURCE_DEFAULTS`. The paper's
    setting (:data:`PAPER_SETTING`) is ``images="mnist"`` with the paper's network, loss, test,
    ``T`` and ``K``; the MNIST defaults change the training recipe (corrupted inputs, ``a =
    0.5``, an annealed learning rate, 3000 epochs), batch all ten images (one Adam step per
    epoch; the paper took batch 1), and take the digits from the MNIST test split (the offline
    copy). :func:`paper_deviations` lists the differences of any configuration in its JSON.
    """

    images: str = "digits"
    per_class: int = 1
    split: str = "test"
    hidden: int | None = None
    topology: str = "complete"
    knn_k: int = 8
    avg_degree: float = 32.0
    radius: float = 3.0
    long_range: int = 16
    max_iter: int = 50
    backward_iter: int = 20
    a: float | None = None
    b: float = 0.5
    init_std: float = 1e-3
    lr: float | None = None
    epochs: int | None = None
    lr_schedule: str | None = None
    optimizer: str | None = None
    batch_size: int = 0
    train_input: str | None = None
    corrupt: float | None = None
    train_corrupt: float | None = None
    train_copies: int = 1
    flip: float = 0.05
    bound: float = 0.01
    test_seed: int = 1234
    seed: int = 0
    eval_every: int = 0
    grad_check_images: int = 2
    device: str = "cpu"

    def resolved(self) -> HopfieldConfig:
        """A copy with every ``None`` replaced by the source default, validated."""
        if self.images not in PATTERN_SOURCES:
            raise ValueError(f"images must be one of {PATTERN_SOURCES}, got {self.images!r}")
        values = dataclasses.asdict(self)
        for key, value in SOURCE_DEFAULTS[self.images].items():
            if values[key] is None:
                values[key] = value
        if values["train_corrupt"] is None:  # train at the test's level unless told otherwise
            values["train_corrupt"] = values["corrupt"]
        cfg = HopfieldConfig(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.topology not in TOPOLOGIES:
            raise ValueError(f"topology must be one of {TOPOLOGIES}, got {self.topology!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.train_input not in TRAIN_INPUTS:
            raise ValueError(f"train_input must be one of {TRAIN_INPUTS}, got {self.train_input!r}")
        for name in ("max_iter", "backward_iter", "per_class", "train_copies"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("epochs", "hidden", "batch_size", "eval_every", "grad_check_images"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("corrupt", "train_corrupt", "flip"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a fraction in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.bound < 1:
            raise ValueError(f"bound must be a fraction in [0, 1), got {self.bound}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

    def identity(self) -> dict[str, Any]:
        """The fields that must match for finished modes to be reused: all but the device, and
        the local topology's ``radius`` and ``long_range`` only where the topology is local."""
        values = dataclasses.asdict(self)
        values.pop("device")
        if values["topology"] != "local":
            values.pop("radius")
            values.pop("long_range")
        return values

    def predates(self) -> dict[str, Any]:
        """The value of each field added after the first results files were written, as those
        files had it: ``train_corrupt`` was the test's ``corrupt``, ``train_copies`` one."""
        return {"train_corrupt": self.corrupt, "train_copies": 1}


RENAMED: dict[str, str] = {"updates": "max_iter", "truncation": "backward_iter"}
"""Configuration keys of files written before the one vocabulary (old -> new): the forward
updates ``T`` are ``max_iter``, the truncation ``K`` is ``backward_iter``."""


def upgrade_config(values: dict[str, Any]) -> dict[str, Any]:
    """A saved ``config`` with the keys of an older file under their names now (:data:`RENAMED`);
    a current one is returned as it is (an equal copy)."""
    return {RENAMED.get(k, k): v for k, v in values.items()}


PAPER_SETTING: dict[str, Any] = {
    "images": "mnist", "per_class": 1, "split": "train", "hidden": 1024, "topology": "complete",
    "max_iter": 50, "backward_iter": 20, "a": 1.0, "b": 0.5, "init_std": 1e-3, "lr": 1e-3,
    "lr_schedule": "constant", "optimizer": "adam", "epochs": 1000, "batch_size": 1,
    "train_input": "clean", "corrupt": 0.5,
}
"""The reference protocol: the paper's network, test and training, T = 50, K = 20, as in the
authors' configuration (their code took the digits from the MNIST training split and trained on
the clean images, batch 1, Adam at 1e-3 for 1000 epochs)."""


_DEVIATION_REASONS: dict[str, str] = {
    "a": "h <- (1-a) h + W s(bh) with a < 1 has the fixed points of a = 1 with W scaled by 1/a; "
         "the damped update converges where the undamped synchronous one oscillates as weights grow",
    "train_input": "fresh random switch-offs of the test's fraction at every step (denoising): "
                   "on clean inputs the optimal map copies the input and never completes a digit",
    "split": "the MNIST test split is the offline copy here; the loader also reads the training files",
}


def paper_deviations(cfg: HopfieldConfig) -> list[str]:
    """Every way ``cfg`` differs from :data:`PAPER_SETTING`, in words, for the JSON record."""
    notes = []
    for key, paper in PAPER_SETTING.items():
        ours = getattr(cfg, key)
        if ours != paper:
            why = _DEVIATION_REASONS.get(key)
            notes.append(f"{key}: {ours!r} (paper: {paper!r})" + (f"; {why}" if why else ""))
    if cfg.batch_size != 1:
        steps = cfg.epochs * (1 if cfg.batch_size in (0, None) else -(-10 * cfg.per_class // cfg.batch_size))
        notes.append(f"Adam steps: {steps} (paper: 1000 epochs x 10 images = 10000 steps of batch 1); "
                     "batching the images as channels keeps every image's dynamics and the summed "
                     "per-image gradient exact, but takes fewer optimiser steps per epoch")
    notes.append("weights: one parameter per undirected synapse drawn N(0, init_std^2) (reference "
                 "code: W + W^T of a full N(0, 1e-3^2) matrix, i.e. std 1.4e-3 and two parameters "
                 "per synapse)")
    return notes
