"""Figures and files that report a run."""

import os

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or assumed
import matplotlib.pyplot as plt  # noqa: E402

from data_generators.files import atomic_output  # noqa: E402


TRAINING_CURVES = (
    ("nt_xent", "NT-Xent (lower is better)"),
    ("contrastive_accuracy", "contrastive accuracy"),
    ("correlation_accuracy", "correlation accuracy"),
    ("projection_std", "projection std (0: collapsed)"),
    ("probe_accuracy", "online linear probe accuracy"),
)


def plot_training_curves(history, path):
    """Plot the SimCLR monitors per epoch, train and validation, one panel each.

    NT-Xent and contrastive accuracy always; correlation accuracy,
    projection std and the online probe's accuracy when the history has
    them. Dashed vertical lines mark where a new unfreezing round starts.

    Args:
        history: dict of per-epoch lists, as `SimCLR.history_`
            (`nt_xent`, `contrastive_accuracy`, their `val_` twins, `round`, ...).
        path: the PNG to write (atomically).

    Returns:
        `path`.

    Example:
    >>> import tempfile
    >>> history = {"nt_xent": [3.0, 2.5], "contrastive_accuracy": [0.2, 0.4], "round": [1, 2]}
    >>> _ = plot_training_curves(history, tempfile.mkdtemp() + "/curves.png")
    """
    panels = [(metric, title) for metric, title in TRAINING_CURVES
              if metric in ("nt_xent", "contrastive_accuracy") or history.get(metric) or history.get("val_" + metric)]
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    rounds = history.get("round", [])
    for axis, (metric, title) in zip(axes[0], panels):
        for prefix, label in (("", "train"), ("val_", "validation")):
            values = history.get(prefix + metric)
            if values:
                axis.plot(range(1, len(values) + 1), values, marker="o", label=label)
        for epoch in range(1, len(rounds)):
            if rounds[epoch] != rounds[epoch - 1]:
                axis.axvline(epoch + 0.5, color="grey", linestyle="--", linewidth=1)
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.legend()
    figure.tight_layout()
    return _save(figure, path)


STAGES = ("before", "after", "scratch")
CLASSIFIER_ORDER = ("linear", "knn", "fine_tuned", "supervised")


def summary_table(records):
    """Mean ± std of the accuracy per (fraction, classifier), one column per stage.

    Args:
        records: a DataFrame (or list of dicts) of benchmark records.

    Returns:
        A DataFrame with columns `fraction`, `classifier`, `labels` and one
        "mean ± std" text column per stage present.

    Example:
    >>> import pandas as pd
    >>> rows = [{"stage": s, "classifier": "linear", "fraction": 1.0, "run": r, "n_labels": 10,
    ...          "accuracy": a} for s, r, a in [("before", 0, 0.5), ("before", 1, 0.7), ("after", 0, 0.9)]]
    >>> summary_table(pd.DataFrame(rows)).to_dict("records")
    [{'fraction': 1.0, 'classifier': 'linear', 'labels': 10, 'before': '0.600 ± 0.141 (2)', 'after': '0.900 (1)'}]
    """
    import pandas as pd

    frame = pd.DataFrame(records)
    rows = []
    for (fraction, classifier), cell in frame.groupby(["fraction", "classifier"], sort=False):
        row = {"fraction": fraction, "classifier": classifier, "labels": int(cell["n_labels"].iloc[0])}
        for stage in STAGES:
            accuracies = cell.loc[cell["stage"] == stage, "accuracy"]
            if len(accuracies) > 1:
                row[stage] = f"{accuracies.mean():.3f} ± {accuracies.std():.3f} ({len(accuracies)})"
            elif len(accuracies) == 1:
                row[stage] = f"{accuracies.iloc[0]:.3f} (1)"
        rows.append(row)
    table = pd.DataFrame(rows)
    order = {name: rank for rank, name in enumerate(CLASSIFIER_ORDER)}
    table = table.sort_values(["fraction", "classifier"], ascending=[False, True],
                              key=lambda column: column.map(order) if column.name == "classifier" else column)
    return table.reset_index(drop=True)


def markdown_table(table):
    """Render a DataFrame as a GitHub markdown table (no extra dependency)."""
    header = "| " + " | ".join(str(c) for c in table.columns) + " |"
    rule = "|" + "---|" * len(table.columns)
    lines = ["| " + " | ".join("" if v != v else str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *lines])


def plot_accuracy_vs_fraction(records, path):
    """Accuracy against label fraction, one panel per classifier, mean ± std per stage."""
    import pandas as pd

    frame = pd.DataFrame(records)
    classifiers = [c for c in CLASSIFIER_ORDER if c in set(frame["classifier"])]
    figure, axes = plt.subplots(1, len(classifiers), figsize=(4 * len(classifiers), 3.5), squeeze=False)
    for axis, classifier in zip(axes[0], classifiers):
        for stage in STAGES:
            cell = frame[(frame["classifier"] == classifier) & (frame["stage"] == stage)]
            if cell.empty:
                continue
            stats = cell.groupby("fraction")["accuracy"].agg(["mean", "std"]).fillna(0).sort_index()
            axis.errorbar(stats.index * 100, stats["mean"], yerr=stats["std"], marker="o", capsize=3, label=stage)
        axis.set_xscale("log")
        axis.set_title(classifier)
        axis.set_xlabel("labelled training images (%)")
        axis.set_ylabel("test accuracy")
        axis.legend()
    figure.tight_layout()
    return _save(figure, path)


def plot_tsne(features_by_stage, path, seed=0):
    """t-SNE maps of test features per stage, coloured by class."""
    from sklearn.manifold import TSNE

    figure, axes = plt.subplots(1, len(features_by_stage), figsize=(5 * len(features_by_stage), 4.5), squeeze=False)
    for axis, (stage, (features, labels)) in zip(axes[0], features_by_stage.items()):
        perplexity = min(30.0, max(2.0, (len(features) - 1) / 3))
        points = TSNE(perplexity=perplexity, random_state=seed, init="pca").fit_transform(features)
        scatter = axis.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=8)
        axis.set_title(f"test features, {stage}")
        axis.set_xticks([])
        axis.set_yticks([])
    figure.colorbar(scatter, ax=list(axes[0]), label="class")
    return _save(figure, path)


def write_benchmark_outputs(out, records, settings, durations, test_features=None, history=None):
    """Write results.json, report.md and the plots of a benchmark, atomically.

    Args:
        out: the output folder.
        records: list of flat result dicts (one per classifier run).
        settings: the benchmark's settings, stored once per file.
        durations: seconds per stage.
        test_features: optional {stage: (features, labels)} for the t-SNE plot.
        history: optional SimCLR history for the training-curve plot.
    """
    import json

    results = write_results(out, records, settings, durations)
    lines = ["# simclr-wrap benchmark", ""]
    if records:
        lines += ["Test accuracy, mean ± std (runs) over repeated runs; `labels` is the number of labelled "
                  "training images used.", "", markdown_table(summary_table(records)), ""]
        plot_accuracy_vs_fraction(records, os.path.join(out, "accuracy_vs_fraction.png"))
    lines += ["## Durations (s)", "", *[f"- {stage}: {seconds}" for stage, seconds in durations.items()], "",
              "## Settings", "", "```json", json.dumps(settings, indent=1), "```", "",
              "## Versions", "", "```json", json.dumps(results["versions"], indent=1), "```", ""]
    with atomic_output(os.path.join(out, "report.md")) as tmp, open(tmp, "w") as file:
        file.write("\n".join(lines))
    if test_features and len(test_features) > 1:
        plot_tsne(test_features, os.path.join(out, "tsne.png"))
    if history:
        plot_training_curves(history, os.path.join(out, "training_curves.png"))


def write_results(out, records, settings, durations):
    """Write `results.json` (settings, durations, versions, records), atomically; return its content."""
    import json

    os.makedirs(out, exist_ok=True)
    results = {"settings": settings, "durations_s": durations, "versions": versions(), "records": records}
    with atomic_output(os.path.join(out, "results.json")) as tmp, open(tmp, "w") as file:
        json.dump(results, file, indent=1)
    return results


def versions():
    """Package, TensorFlow and Keras versions, and the git commit when there is one."""
    import subprocess

    import keras
    import tensorflow as tf

    import simclr_wrap

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                                cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"simclr_wrap": simclr_wrap.__version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "git_commit": commit}


def _save(figure, path):
    with atomic_output(path) as tmp:
        figure.savefig(tmp, dpi=100)
    plt.close(figure)
    return path
