"""Figures and files that report a run."""

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or assumed
import matplotlib.pyplot as plt  # noqa: E402

from data_generators.io import atomic_output  # noqa: E402


def plot_training_curves(history, path):
    """Plot NT-Xent and contrastive accuracy per epoch, train and validation.

    Dashed vertical lines mark where a new unfreezing round starts.

    Args:
        history: dict of per-epoch lists, as `SimCLR.history_`
            (`nt_xent`, `contrastive_accuracy`, their `val_` twins, `round`).
        path: the PNG to write (atomically).

    Returns:
        `path`.

    Example:
    >>> import tempfile
    >>> history = {"nt_xent": [3.0, 2.5], "contrastive_accuracy": [0.2, 0.4], "round": [1, 2]}
    >>> _ = plot_training_curves(history, tempfile.mkdtemp() + "/curves.png")
    """
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = range(1, len(history.get("nt_xent", [])) + 1)
    for axis, metric, title in (
        (axes[0], "nt_xent", "NT-Xent (lower is better)"),
        (axes[1], "contrastive_accuracy", "contrastive accuracy"),
    ):
        for prefix, label in (("", "train"), ("val_", "validation")):
            if history.get(prefix + metric):
                axis.plot(epochs, history[prefix + metric], marker="o", label=label)
        rounds = history.get("round", [])
        for epoch in range(1, len(rounds)):
            if rounds[epoch] != rounds[epoch - 1]:
                axis.axvline(epoch + 0.5, color="grey", linestyle="--", linewidth=1)
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.legend()
    figure.tight_layout()
    with atomic_output(path) as tmp:
        figure.savefig(tmp, dpi=100)
    plt.close(figure)
    return path
