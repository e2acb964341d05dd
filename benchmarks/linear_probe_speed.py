"""Speed of the linear probe, old (GridSearchCV over a scaler + LogisticRegression pipeline) against new.

Uses the real VGG16 features of TrashNet (the shared backbone at 80x80,
flattened 2x2x512 = 2,048 features; extracted once and cached as .npy under
--cache). The 100 % cell (all 1,673 training images) is timed with old and new
in turns in one process (old, new, old, new, ...: the machine is noisy, so
each pair gives a ratio and the median ratio is reported); pair i uses seed
i, so the pairs double as the 100 % cells of the comparison. Then, for 3
fractions x 3 runs (`label_subset(train_labels, fraction, seed=run)`, probe
seed = run, as the benchmark), both probes are fitted and compared: test
accuracy, chosen C and the mean cross-validated log-loss at each one's C
(both evaluated on the old probe's log-losses), and the seconds of each: a
stage's linear cells as the benchmark runs them cost the sum of the old ones,
against the new ones with the 100 % cell computed once (its other runs share
it). The kNN probe is timed on the same features. Writes the `linear_probe` and `knn_probe` entries of --json.

    python benchmarks/linear_probe_speed.py                 # 3 timed pairs, 3 fractions x 3 runs
    python benchmarks/linear_probe_speed.py --quick         # 1 timed pair, 1 run per fraction
"""

import argparse
import datetime
import json
import os
import statistics
import sys
import time
import warnings

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # speed_json, beside this file
from speed_json import machine, read_speed_json, write_speed_json  # noqa: E402
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from evaluation.fractions import label_subset
from evaluation.knn import KNNProbe
from evaluation.linear import LinearProbe, _c_grid

SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared"))
SPLIT = os.path.join(SHARED, "data", "trashnet", "split.csv")
WEIGHTS = os.path.join(SHARED, "backbones", "vgg16_hed_notop.weights.h5")
SIZE = 80
FRACTIONS = (1.0, 0.2, 0.05)


STARTED = time.perf_counter()


def progress(message):
    print(f"[{time.perf_counter() - STARTED:6.0f} s] {message}", file=sys.stderr, flush=True)


def load_features(cache):
    """VGG16 (flatten) features and labels of TrashNet's train and test splits, cached under `cache`."""
    paths = {name: [os.path.join(cache, f"vgg16_trashnet_{name}_{part}.npy") for part in ("x", "y")]
             for name in ("train", "test")}
    if not all(os.path.exists(path) for pair in paths.values() for path in pair):
        from data_generators import DataGeneratorClass, split_sources
        from evaluation.features import extract_features
        from simclr_wrap.backbones import load_backbone

        parts = split_sources(SPLIT)
        model, preprocess = load_backbone("vgg16", (SIZE, SIZE, 3), weights=WEIGHTS, preprocess="caffe")
        classes = sorted(set(parts["train"]["class_label"]))
        os.makedirs(cache, exist_ok=True)
        for name, (x_path, y_path) in paths.items():
            progress(f"extracting the {name} features")
            data = DataGeneratorClass(parts[name], batch_size=64, width=SIZE, height=SIZE,
                                      preprocess_input=preprocess, classes=classes)
            features, labels = extract_features(model, data, "flatten")
            np.save(x_path, features)
            np.save(y_path, np.asarray(labels))
    return [tuple(np.load(path) for path in paths[name]) for name in ("train", "test")]


def old_probe(features, labels, seed, Cs=10, cv=5, max_iter=2000):
    """The probe before issue 12: GridSearchCV of a scaler + LogisticRegression pipeline, refit at the best C.

    Returns the fitted pipeline, the chosen C and the mean CV log-loss of each candidate.
    """
    grid = _c_grid(Cs)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, random_state=seed))
    counts = np.unique(labels, return_counts=True)[1]
    search = GridSearchCV(pipeline, {"logisticregression__C": list(grid)}, scoring="neg_log_loss",
                          cv=StratifiedKFold(min(cv, counts.min()), shuffle=True, random_state=seed),
                          refit=False)
    search.fit(features, labels)
    C = float(search.best_params_["logisticregression__C"])
    losses = -search.cv_results_["mean_test_score"]
    return pipeline.set_params(logisticregression__C=C).fit(features, labels), C, losses


def timed(work):
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 timed pair and 1 run per fraction")
    parser.add_argument("--pairs", type=int, default=None, help="timed (old, new) pairs of the 100 %% cell")
    parser.add_argument("--cache", default="/tmp/simclr_wrap_features", help="folder of the cached features")
    parser.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "speed.json"))
    settings = parser.parse_args(argv)
    pairs = settings.pairs or (1 if settings.quick else 3)
    runs = 1 if settings.quick else 3
    warnings.filterwarnings("ignore", category=ConvergenceWarning)

    (train_x, train_y), (test_x, test_y) = load_features(settings.cache)
    progress(f"features: train {train_x.shape}, test {test_x.shape}")

    grid = list(_c_grid(10))

    def cell(fraction, run, x, y, old, new):
        old_pipeline, old_C, old_losses = old
        old_accuracy = float(np.mean(old_pipeline.predict(test_x) == test_y))
        new_accuracy = new.score(test_x, test_y)
        # Both choices judged by the old probe's CV log-losses: equal C, or a C of equal loss (within 1 %).
        loss_at_old, loss_at_new = old_losses[grid.index(old_C)], old_losses[grid.index(new.C_)]
        result = {"fraction": fraction, "run": run, "n_labels": len(y),
                  "old_accuracy": round(old_accuracy, 4), "new_accuracy": round(new_accuracy, 4),
                  "old_C": old_C, "new_C": new.C_,
                  "old_cv_log_loss_at_old_C": round(float(loss_at_old), 4),
                  "old_cv_log_loss_at_new_C": round(float(loss_at_new), 4),
                  "new_cv_log_loss_at_new_C": round(float(new.cv_log_loss_[grid.index(new.C_)]), 4),
                  "same_C_or_loss": bool(old_C == new.C_ or loss_at_new <= 1.01 * loss_at_old)}
        progress(f"fraction {fraction}, run {run}: {result}")
        return result

    # 1. The 100 % cell, old and new in turns; pair i uses seed i (mod runs), the benchmark's run i, so the
    # pairs are also the 100 % cells of the comparison.
    old_times, new_times, cells = [], [], {}
    for pair in range(pairs):
        seed = pair % runs
        old_seconds, old = timed(lambda seed=seed: old_probe(train_x, train_y, seed=seed))
        new_seconds, new = timed(lambda seed=seed: LinearProbe(seed=seed).fit(train_x, train_y))
        old_times.append(old_seconds)
        new_times.append(new_seconds)
        progress(f"pair {pair + 1}/{pairs} (seed {seed}): old {old_seconds:.1f} s (C={old[1]:g}), "
                 f"new {new_seconds:.1f} s (C={new.C_:g}), ratio {old_seconds / new_seconds:.1f}")
        if (1.0, seed) not in cells:
            cells[1.0, seed] = cell(1.0, seed, train_x, train_y, old, new)
            cells[1.0, seed].update(old_seconds=round(old_seconds, 2), new_seconds=round(new_seconds, 2))
    ratios = [old / new for old, new in zip(old_times, new_times)]

    # 2. Accuracy, C and CV log-loss over the fractions and runs.
    for fraction in FRACTIONS:
        for run in range(runs):
            if (fraction, run) in cells:
                continue
            subset = label_subset(train_y, fraction, seed=run)
            x, y = train_x[subset], train_y[subset]
            old_seconds, old = timed(lambda x=x, y=y, run=run: old_probe(x, y, seed=run))
            new_seconds, new = timed(lambda x=x, y=y, run=run: LinearProbe(seed=run).fit(x, y))
            cells[fraction, run] = cell(fraction, run, x, y, old, new)
            cells[fraction, run].update(old_seconds=round(old_seconds, 2), new_seconds=round(new_seconds, 2))
    cells = list(cells.values())
    # A stage's linear cells as the benchmark runs them: old, every cell; new, the 100 % cell once (the other
    # runs share it), every other cell.
    all_cells_old = sum(c["old_seconds"] for c in cells)
    all_cells_new = sum(c["new_seconds"] for c in cells if c["fraction"] != 1.0 or c["run"] == 0)

    # 3. The kNN probe on the same features (the 100 % cell).
    knn_seconds = [timed(lambda: KNNProbe(k=20).fit(train_x, train_y).evaluate(test_x, test_y))[0]
                   for _ in range(3)]

    entry = {
        "old_seconds": round(statistics.median(old_times), 2),
        "new_seconds": round(statistics.median(new_times), 2),
        "speedup": round(statistics.median(ratios), 1),
        "speedup_per_pair": [round(ratio, 1) for ratio in ratios],
        "old_seconds_per_pair": [round(t, 2) for t in old_times],
        "new_seconds_per_pair": [round(t, 2) for t in new_times],
        "stage_linear_cells_old_seconds": round(all_cells_old, 1),
        "stage_linear_cells_new_seconds": round(all_cells_new, 1),
        "stage_linear_cells_speedup": round(all_cells_old / all_cells_new, 1),
        "max_accuracy_delta": round(max(abs(c["new_accuracy"] - c["old_accuracy"]) for c in cells), 4),
        "same_C_or_loss": all(c["same_C_or_loss"] for c in cells),
        "features": f"VGG16 (vgg16_hed_notop, caffe, {SIZE}x{SIZE}, flatten) on TrashNet: "
                    f"train {list(train_x.shape)}, test {list(test_x.shape)}",
        "cells": cells,
    }
    knn = {"seconds_fit_and_evaluate_100_percent": round(statistics.median(knn_seconds), 3), "k": 20}
    results = read_speed_json(settings.json)
    results.update({
        "linear_probe": entry, "knn_probe": knn,
        "linear_probe_command": "python benchmarks/linear_probe_speed.py" + (" --quick" if settings.quick else "")
                                + (f" --pairs {settings.pairs}" if settings.pairs else ""),
        "linear_probe_date": datetime.datetime.now().isoformat(timespec="seconds"),
        "linear_probe_machine": machine(),
    })
    write_speed_json(results, settings.json)
    print(json.dumps({"linear_probe": {k: v for k, v in entry.items() if k != "cells"}, "knn_probe": knn}, indent=1))


if __name__ == "__main__":
    main()
