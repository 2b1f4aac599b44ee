"""The paper protocol's baseline: a linear classifier on the PCA features alone.

It tells how much the graph propagation adds over the node features: a multinomial logistic
regression fitted on the training nodes, its inverse regularisation strength picked on the
validation nodes (ties: the smaller C), scored on the test nodes.
"""

from __future__ import annotations

from sklearn.linear_model import LogisticRegression
from torch_geometric.data import Data

DEFAULT_CS = (0.01, 0.1, 1.0, 10.0, 100.0)


def linear_pca_baseline(data: Data, cs: tuple[float, ...] = DEFAULT_CS) -> dict[str, float]:
    """Fit logistic regression on ``data.x[train_mask]``; return ``{"C", "val_acc", "test_acc"}``.

    ``data`` is a protocol graph (e.g. ``apply_protocol(loaded, "paper", seed)``) whose ``x``
    are the PCA features. Accuracies are fractions.
    """
    if not cs:
        raise ValueError("need at least one C to try")
    x, y = data.x.detach().cpu().numpy(), data.y.cpu().numpy()
    tr, va, te = (m.cpu().numpy() for m in (data.train_mask, data.val_mask, data.test_mask))
    if tr.sum() == 0 or va.sum() == 0 or te.sum() == 0:
        raise ValueError("train, val and test masks must each select at least one node")
    if len(set(y[tr].tolist())) < 2:
        raise ValueError("the training nodes hold a single class; a classifier cannot be fitted")
    best: dict[str, float] | None = None
    for c in sorted(cs):
        model = LogisticRegression(C=c, max_iter=5000).fit(x[tr], y[tr])
        val_acc = float((model.predict(x[va]) == y[va]).mean())
        if best is None or val_acc > best["val_acc"]:
            best = {
                "C": float(c),
                "val_acc": val_acc,
                "test_acc": float((model.predict(x[te]) == y[te]).mean()),
            }
    assert best is not None
    return best
