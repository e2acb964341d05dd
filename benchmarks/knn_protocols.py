"""The two kNN protocols side by side: the majority vote of k=20 (the published tables) and the weighted kNN.

On the real VGG16 features of TrashNet (the shared backbone at 80x80, flatten; extracted once and cached
by `linear_probe_speed.load_features`), for 100 / 20 / 5 % of the training labels x 3 runs
(`label_subset(train_labels, fraction, seed=run)`, as the benchmark): the test accuracy of
`KNNProbe(k=20, weights="uniform")` and of `KNNProbe()` (votes weighted by exp(cos / 0.07), k chosen
by leave-one-out on the labelled images, at most the smallest class), and the k it chose. Writes the
`knn_protocols` entry of --json.

    python benchmarks/knn_protocols.py
"""

import argparse
import datetime
import os
import statistics
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from linear_probe_speed import FRACTIONS, load_features  # noqa: E402
from speed_json import machine, read_speed_json, write_speed_json  # noqa: E402

from evaluation.fractions import label_subset  # noqa: E402
from evaluation.knn import KNNProbe  # noqa: E402

PROTOCOLS = {"majority, k=20": dict(k=20, weights="uniform"), "weighted, k auto": {}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", default="/tmp/simclr_wrap_features", help="folder of the cached features")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "speed.json"))
    settings = parser.parse_args(argv)
    (train_x, train_y), (test_x, test_y) = load_features(settings.cache)
    table = {}
    for fraction in FRACTIONS:
        for name, options in PROTOCOLS.items():
            accuracies, ks = [], []
            for run in range(settings.runs):
                subset = label_subset(train_y, fraction, seed=run)
                probe = KNNProbe(**options).fit(train_x[subset], train_y[subset])
                accuracies.append(probe.evaluate(test_x, test_y)["accuracy"])
                ks.append(probe.k_)
            table[f"{fraction:g} {name}"] = {
                "n_labels": len(subset), "accuracy_mean": round(statistics.mean(accuracies), 4),
                "accuracy_std": round(statistics.pstdev(accuracies), 4), "k": ks}
            print(f"{fraction:>5g} {name:<18} {len(subset):>5} labels  accuracy "
                  f"{statistics.mean(accuracies):.3f} ± {statistics.pstdev(accuracies):.3f}  k {ks}")
    result = {"table": table, "features": "VGG16 (vgg16_hed_notop, caffe, 80x80, flatten), TrashNet train/test, before",
              "command": "python benchmarks/knn_protocols.py", "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "machine": machine()}
    speed = read_speed_json(settings.json)
    speed["knn_protocols"] = result
    write_speed_json(speed, settings.json)


if __name__ == "__main__":
    main(sys.argv[1:])
