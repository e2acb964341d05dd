"""Figures and files that report a run."""

import numbers
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or assumed
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402  (no pyplot: figures are not kept in a global registry)
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator, NullLocator  # noqa: E402

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
    them. Epochs are counted from 1 across the whole schedule (integer
    ticks); a dashed vertical line labelled "round k" marks where unfreezing
    round k starts.

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
    return _save(training_curves_figure(history), path)


def training_curves_figure(history):
    """The Figure that `plot_training_curves` saves, to look at or test before writing it."""
    panels = [(metric, title) for metric, title in TRAINING_CURVES
              if metric in ("nt_xent", "contrastive_accuracy") or history.get(metric) or history.get("val_" + metric)]
    rounds = list(history.get("round") or [])
    n_epochs = max([len(rounds), 1] + [len(history.get(prefix + metric) or []) for metric, _ in panels
                                       for prefix in ("", "val_")])
    figure = Figure(figsize=(4.2 * len(panels), 3.6), layout="constrained")
    marker = "o" if n_epochs <= 40 else None
    for axis, (metric, title) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels):
        for prefix, label in (("", "train"), ("val_", "validation")):
            values = history.get(prefix + metric)
            if values:
                axis.plot(range(1, len(values) + 1), values, marker=marker, markersize=4, label=label)
        for epoch, number in round_starts(rounds):
            axis.axvline(epoch - 0.5, color="grey", linestyle="--", linewidth=1)
            axis.text(epoch - 0.5, 0.98, f"round {number} ", transform=axis.get_xaxis_transform(), rotation=90,
                      ha="right", va="top", fontsize=8, color="dimgrey")
        axis.set_xlim(0.5, n_epochs + 0.5)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10], min_n_ticks=1))
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=8)
    return figure


def round_starts(rounds):
    """(first epoch, round) for each unfreezing round after the first; epochs counted from 1.

    Example:
    >>> round_starts([1, 1, 2, 2, 2, 3])
    [(3, 2), (6, 3)]
    """
    return [(epoch + 1, rounds[epoch]) for epoch in range(1, len(rounds)) if rounds[epoch] != rounds[epoch - 1]]


STAGES = ("before", "after", "scratch")
CLASSIFIER_ORDER = ("linear", "knn", "fine_tuned", "distilled", "supervised")


def summary_table(records):
    """Mean ± std of the accuracy per (fraction, classifier), one column per stage.

    The "after" column pools every SimCLR run with every label subset. With
    several SimCLR runs (records with `pretrain_run`) two columns say how much
    of a gain pretraining's own variance could explain: "std between SimCLR
    runs", the standard deviation of the runs' mean accuracies, and "gain",
    after minus before, marked when it is smaller than that spread.

    Args:
        records: a DataFrame (or list of dicts) of benchmark records.

    Returns:
        A DataFrame with columns `fraction`, `classifier`, `labels`, one
        "mean ± std" text column per stage present, and with several SimCLR
        runs "std between SimCLR runs" and "gain".

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
        row.update(_pretraining_spread(cell))
        rows.append(row)
    table = pd.DataFrame(rows)
    order = {name: rank for rank, name in enumerate(CLASSIFIER_ORDER)}
    table = table.sort_values(["fraction", "classifier"], ascending=[False, True],
                              key=lambda column: column.map(order) if column.name == "classifier" else column)
    return table.reset_index(drop=True)


def _pretraining_spread(cell):
    """The "std between SimCLR runs" and "gain" columns of a cell, or {} with fewer than two SimCLR runs.

    Example:
    >>> import pandas as pd
    >>> rows = [{"stage": "before", "accuracy": 0.62}] + [
    ...     {"stage": "after", "pretrain_run": run, "accuracy": accuracy}
    ...     for run, accuracy in [(0, 0.60), (0, 0.62), (1, 0.66), (1, 0.64)]]
    >>> _pretraining_spread(pd.DataFrame(rows))
    {'std between SimCLR runs': '0.028 (2 runs)', 'gain': '+0.010 (within the spread between SimCLR runs)'}
    """
    after = cell[cell["stage"] == "after"]
    if "pretrain_run" not in after or after["pretrain_run"].nunique() < 2:
        return {}
    run_means = after.groupby("pretrain_run")["accuracy"].mean()
    spread = run_means.std()
    columns = {"std between SimCLR runs": f"{spread:.3f} ({len(run_means)} runs)"}
    before = cell.loc[cell["stage"] == "before", "accuracy"]
    if len(before):
        gain = after["accuracy"].mean() - before.mean()
        columns["gain"] = f"{gain:+.3f}" + (" (within the spread between SimCLR runs)" if abs(gain) < spread else "")
    return columns


def markdown_table(table):
    """Render a DataFrame as a GitHub markdown table (no extra dependency)."""
    header = "| " + " | ".join(str(c) for c in table.columns) + " |"
    rule = "|" + "---|" * len(table.columns)
    lines = ["| " + " | ".join("" if v != v else str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *lines])


def plot_accuracy_vs_fraction(records, path):
    """Accuracy against label fraction, one panel per classifier, mean ± std per stage.

    The x ticks are the fractions used, as percentages ("5 %", "100 %"), on a
    log axis when they span a factor of 4 or more. The stages' points are
    nudged apart a little so that their error bars do not hide each other.

    Args:
        records: a DataFrame (or list of dicts) of benchmark records
            (`stage`, `classifier`, `fraction`, `accuracy`).
        path: the PNG to write (atomically).

    Returns:
        `path`.
    """
    return _save(accuracy_vs_fraction_figure(records), path)


def accuracy_vs_fraction_figure(records):
    """The Figure that `plot_accuracy_vs_fraction` saves, to look at or test before writing it."""
    import pandas as pd

    frame = pd.DataFrame(records)
    classifiers = [c for c in CLASSIFIER_ORDER if c in set(frame["classifier"])]
    stages = [stage for stage in STAGES if stage in set(frame["stage"])]
    fractions = sorted(set(frame["fraction"]))
    log = len(fractions) > 1 and fractions[-1] >= 4 * fractions[0]
    span = 100 * (fractions[-1] - fractions[0]) or 100.0
    panel_width = max(3.4, 0.7 * len(fractions))  # room for the tick labels of close fractions
    figure = Figure(figsize=(panel_width * len(classifiers) + 1.2, 3.6), layout="constrained")
    axes = figure.subplots(1, len(classifiers), squeeze=False, sharey=True)[0]
    for axis, classifier in zip(axes, classifiers):
        for rank, stage in enumerate(stages):
            cell = frame[(frame["classifier"] == classifier) & (frame["stage"] == stage)]
            if cell.empty:
                continue
            stats = cell.groupby("fraction")["accuracy"].agg(["mean", "std"]).fillna(0).sort_index()
            nudge = (rank - (len(stages) - 1) / 2) * 0.03
            percents = stats.index.to_numpy(float) * 100
            x = percents * (1 + nudge) if log else percents + nudge * span
            axis.errorbar(x, stats["mean"], yerr=stats["std"], marker="o", capsize=3, label=stage,
                          color=f"C{STAGES.index(stage)}")
        if log:
            axis.set_xscale("log")
        axis.set_xticks([100 * fraction for fraction in fractions], [_percent(f) for f in fractions])
        axis.xaxis.set_minor_locator(NullLocator())
        axis.set_title(classifier)
        axis.set_xlabel("labelled training images")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (mean ± std)")
    handles = [Line2D([], [], color=f"C{STAGES.index(stage)}", marker="o", label=stage) for stage in stages]
    figure.legend(handles=handles, loc="outside right upper", title="stage")
    return figure


def _percent(fraction):
    """0.05 -> "5 %", 0.125 -> "12.5 %"."""
    return f"{round(100 * float(fraction), 6):g} %"


def plot_tsne(features_by_stage, path, seed=0, class_names=None):
    """t-SNE maps of test features per stage, coloured by class, with one legend of class names.

    Args:
        features_by_stage: {stage: (features (N, D), labels (N,))}.
        path: the PNG to write (atomically).
        seed: the t-SNE seed.
        class_names: optional names of the classes, `class_names[label]`
            for each label (a list indexed by integer labels, or a dict);
            None shows the label values.

    Returns:
        `path`.
    """
    return _save(tsne_figure(features_by_stage, seed=seed, class_names=class_names), path)


def tsne_figure(features_by_stage, seed=0, class_names=None):
    """The Figure that `plot_tsne` saves, to look at or test before writing it."""
    from sklearn.manifold import TSNE

    classes = np.unique(np.concatenate([np.asarray(labels).ravel() for _, labels in features_by_stage.values()]))
    names = [_class_name(label, class_names) for label in classes]
    colours = _class_colours(len(classes))
    figure = Figure(figsize=(4.5 * len(features_by_stage) + 1.8, 4.5), layout="constrained")
    axes = figure.subplots(1, len(features_by_stage), squeeze=False)[0]
    for axis, (stage, (features, labels)) in zip(axes, features_by_stage.items()):
        features = np.asarray(features, dtype=np.float32).reshape(len(features), -1)
        perplexity = min(30.0, max(2.0, (len(features) - 1) / 3))
        points = TSNE(perplexity=perplexity, random_state=seed, init="pca").fit_transform(features)
        index = np.searchsorted(classes, np.asarray(labels).ravel())
        axis.scatter(points[:, 0], points[:, 1], c=colours[index], s=8, alpha=0.8, linewidths=0)
        axis.set_title(f"test features, {stage}")
        axis.set_xticks([])
        axis.set_yticks([])
    handles = [Line2D([], [], color=colour, marker="o", linestyle="", label=name)
               for colour, name in zip(colours, names)]
    figure.legend(handles=handles, loc="outside right upper", title="class", ncols=1 if len(handles) <= 20 else 2)
    return figure


def _class_name(label, class_names):
    """`class_names[label]`, or the label itself as text without names."""
    label = label.item() if isinstance(label, np.generic) else label
    if class_names is None:
        return str(label)
    key = int(label) if isinstance(label, numbers.Integral) else label
    try:
        if isinstance(key, int) and key < 0:
            raise IndexError(key)
        return str(class_names[key])
    except (IndexError, KeyError, TypeError):
        raise ValueError(
            f"Expected class_names to name every label of the features. Received: class_names={class_names!r}, "
            f"which has no name for label {label!r}"
        ) from None


def _class_colours(n):
    """n distinct RGBA colours: tab10 up to 10 classes, tab20 up to 20, then evenly spread over turbo."""
    if n <= 10:
        return np.asarray(matplotlib.colormaps["tab10"].colors)[:n]
    if n <= 20:
        return np.asarray(matplotlib.colormaps["tab20"].colors)[:n]
    return matplotlib.colormaps["turbo"](np.linspace(0.05, 0.95, n))


def write_benchmark_outputs(out, records, settings, durations, versions, test_features=None, history=None,
                            class_names=None):
    """Write results.json, report.md and the plots of a benchmark, atomically.

    Args:
        out: the output folder.
        records: list of flat result dicts (one per classifier run).
        settings: the benchmark's settings, stored once per file.
        durations: seconds per stage.
        versions: what `versions()` said when the run started.
        test_features: optional {stage: (features, labels)} for the t-SNE plot.
        history: optional SimCLR history for the training-curve plot.
        class_names: the class of each label index, for the t-SNE legend.
    """
    import json

    results = write_results(out, records, settings, durations, versions)
    lines = ["# simclr-wrap benchmark", ""]
    if records:
        lines += ["Test accuracy, mean ± std (runs) over repeated runs (after SimCLR: every SimCLR run with "
                  "every label subset); `labels` is the number of labelled training images used. With several "
                  "SimCLR runs, `std between SimCLR runs` is the spread of their mean accuracies, and a `gain` "
                  "smaller than it is marked.", "", markdown_table(summary_table(records)), ""]
        lines += shared_cells_note(records)
        plot_accuracy_vs_fraction(records, os.path.join(out, "accuracy_vs_fraction.png"))
    lines += ["## Durations (s)", "", *[f"- {stage}: {seconds}" for stage, seconds in durations.items()], "",
              "## Settings", "", "```json", json.dumps(settings, indent=1), "```", "",
              "## Versions", "", "```json", json.dumps(results["versions"], indent=1), "```", ""]
    with atomic_output(os.path.join(out, "report.md")) as tmp, open(tmp, "w") as file:
        file.write("\n".join(lines))
    if test_features and len(test_features) > 1:
        plot_tsne(test_features, os.path.join(out, "tsne.png"), class_names=class_names)
    if history:
        plot_training_curves(history, os.path.join(out, "training_curves.png"))


def shared_cells_note(records):
    """Report lines saying which cells repeat an earlier run's result (records with `shared_from_run`).

    Example:
    >>> records = [{"stage": "before", "classifier": "knn", "fraction": 1.0, "run": run, "shared_from_run": 0}
    ...            for run in (1, 2)]
    >>> shared_cells_note(records)[0].split(".")[0]
    'Computed once: before knn at 100 % (runs 1, 2 as run 0)'
    """
    cells = {}
    for record in records:
        if "shared_from_run" in record:
            stage = record["stage"] + (f" (SimCLR run {record['pretrain_run']})" if "pretrain_run" in record else "")
            key = (stage, record["classifier"], _percent(record["fraction"]), record["shared_from_run"])
            cells.setdefault(key, []).append(record["run"])
    if not cells:
        return []
    listed = "; ".join(f"{stage} {classifier} at {percent} (runs {', '.join(map(str, runs))} as run {source})"
                       for (stage, classifier, percent, source), runs in cells.items())
    return [f"Computed once: {listed}. These runs have the same labelled images, features and probe as the run "
            "named, so its result is recorded for them without recomputing (std 0 by construction).", ""]


def write_results(out, records, settings, durations, versions):
    """Write `results.json` (settings, durations, versions, records), atomically; return its content."""
    import json

    os.makedirs(out, exist_ok=True)
    results = {"settings": settings, "durations_s": durations, "versions": versions, "records": records}
    with atomic_output(os.path.join(out, "results.json")) as tmp, open(tmp, "w") as file:
        json.dump(results, file, indent=1)
    return results


def versions():
    """Package, Keras and backend versions, the git commit and whether the tree differs from it.

    Read when a run starts, so that results.json names the code that ran. "tensorflow" is None where
    it is not installed (Keras on JAX, say); the backend's own package is named beside it.
    """
    import subprocess
    from importlib import metadata

    import keras

    import simclr_wrap

    def installed(package):
        if package in sys.modules:  # imported: its own version (also where it came as, say, tensorflow-cpu)
            return sys.modules[package].__version__
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    def git(*arguments):
        try:
            return subprocess.run(["git", *arguments], capture_output=True, text=True, check=True,
                                  cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    commit = git("rev-parse", "HEAD")
    changes = git("status", "--porcelain", "--untracked-files=no") if commit else None
    backend = keras.backend.backend()
    found = {"simclr_wrap": simclr_wrap.__version__, "tensorflow": installed("tensorflow"), "keras": keras.__version__,
             "keras_backend": backend}
    if backend != "tensorflow":
        found[backend] = installed(backend)
    return {**found, "git_commit": commit, "git_dirty": None if changes is None else bool(changes)}


def _save(figure, path):
    with atomic_output(path) as tmp:
        figure.savefig(tmp, dpi=100)
    return path
