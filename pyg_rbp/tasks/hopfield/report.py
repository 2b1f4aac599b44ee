"""Rendering a Hopfield benchmark document: the markdown table of methods and the image grid.

Both are drawn from the JSON document alone (images are stored in it as bit strings), so a
resumed run, or anyone holding the JSON, can regenerate them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from pyg_rbp.results import atomic_save_figure, human_bytes, markdown_table
from pyg_rbp.tasks.hopfield.config import upgrade_config

METHOD_NAMES = {"bptt": "BPTT", "tbptt": "TBPTT", "rbp": "RBP", "cg": "CG-RBP", "neumann": "Neumann-RBP"}


def _unbits(bits: list[str], shape: tuple[int, int]) -> torch.Tensor:
    return torch.tensor([[c == "1" for c in s] for s in bits], dtype=torch.float32).reshape(-1, *shape)


def results_table(doc: dict[str, Any]) -> str:
    """Markdown: one row per method with recall, cost and the diagnostics."""
    cfg = upgrade_config(doc["config"])  # a file of the older vocabulary (updates, truncation) too
    rows = []
    for r in doc["results"]:
        rows.append({
            "method": METHOD_NAMES.get(r["grad"], r["grad"]),
            "success": r.get("success_rate"),
            "pixel_error": r.get("pixel_error"),
            "success_flip": r.get("success_rate_flip"),
            "success_clean": r.get("success_rate_clean"),
            "epoch_time": r.get("epoch_time_s"),
            "saved": human_bytes(r.get("saved_bytes")),
            "residual": r.get("forward_residual"),
            "rho": r.get("spectral_radius"),
            "cos": r.get("gradient_cosine"),
            "loss": r.get("final_train_loss"),
        })
    columns = ["method", "success", "pixel_error", "success_flip", "success_clean", "epoch_time",
               "saved", "residual", "rho", "cos", "loss"]
    headers = ["method", f"success (off {cfg['corrupt']:.0%})", "pixel error",
               f"success (flip {cfg['flip']:.0%})", "success (clean)", "time/epoch (s)",
               "activation memory", "forward residual", "spectral radius", "grad cosine",
               "final train L1"]
    head = (f"Hopfield memory, {doc['patterns']['source']}: {cfg['hidden']} hidden neurons, "
            f"{cfg['topology']} synapses, T={cfg['max_iter']} updates, K={cfg['backward_iter']}, "
            f"{cfg['epochs']} epochs (batch {cfg['batch_size'] or 'all'}), "
            f"{cfg['optimizer']} lr {cfg['lr']:g} ({cfg['lr_schedule']}), "
            f"trained on {cfg['train_input']} inputs. Success: {doc['metrics']['success_rate']}.\n\n")
    return head + markdown_table(rows, columns, headers, digits=4)


def plot_grid(doc: dict[str, Any], path: str | os.PathLike) -> Path:
    """PNG grid: clean, corrupted, then the recall of every method (one column per pattern).

    Drawn as one mosaic image (a single ``imshow``), which keeps it fast for many rows.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = tuple(doc["patterns"]["shape"])
    rows = [("clean", doc["patterns"]["clean"]), ("corrupted", doc["patterns"]["corrupted"])]
    for r in doc["results"]:
        label = f"{METHOD_NAMES.get(r['grad'], r['grad'])} ({r['success_rate']:.0%})"
        rows.append((label, r["retrieved"]))
    n_cols = len(doc["patterns"]["clean"])
    gap = max(1, h // 8)
    mosaic = torch.full((len(rows) * (h + gap) - gap, n_cols * (w + gap) - gap), 0.35)
    for i, (_, bits) in enumerate(rows):
        images = _unbits(bits, (h, w))
        for j in range(n_cols):
            mosaic[i * (h + gap): i * (h + gap) + h, j * (w + gap): j * (w + gap) + w] = 1.0 - images[j]
    fig, ax = plt.subplots(figsize=(0.75 * n_cols + 1.6, 0.75 * len(rows) + 0.5))
    ax.imshow(mosaic.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([i * (h + gap) + h / 2 for i in range(len(rows))])
    ax.set_yticklabels([label for label, _ in rows], fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(f"Hopfield recall, {doc['patterns']['source']} (success rate in brackets)", fontsize=9)
    fig.tight_layout()
    return atomic_save_figure(fig, path, dpi=120)
