"""Where a benchmark's wall clock went, from its results.json; two runs side by side into speed.json.

Each record holds the seconds its classifier took; the stage durations hold
the rest (feature extraction before the cells of a stage, SimCLR itself).
So a run's time splits into linear, kNN, fine-tuned, SimCLR and the rest
(feature extraction and writing the outputs).

    python benchmarks/benchmark_seconds.py benchmarks/trashnet/vgg16/results.json \\
        runs/trashnet_vgg16_issue12/results.json --name vgg16

writes `benchmark: {vgg16_seconds_before, vgg16_seconds_after, ...}` into
benchmarks/speed.json ("before" and "after" this change, not the stages).
"""

import argparse
import json
import os
import sys
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # speed_json, beside this file
from speed_json import read_speed_json, write_speed_json  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def seconds_by_part(results):
    """{part: seconds} of one results.json's content: each classifier, SimCLR, the rest, and the total.

    Example:
    >>> seconds_by_part({"durations_s": {"before": 10.0, "simclr run 0": 5.0},
    ...                  "records": [{"classifier": "linear", "seconds": 4.0}, {"classifier": "knn", "seconds": 1.0}]})
    {'linear': 4.0, 'knn': 1.0, 'simclr': 5.0, 'extraction_and_rest': 5.0, 'total': 15.0}
    """
    parts = Counter()
    for record in results["records"]:
        parts[record["classifier"]] += record.get("seconds", 0.0)
    durations = results["durations_s"]
    parts["simclr"] = sum(seconds for stage, seconds in durations.items() if stage.startswith("simclr"))
    total = sum(durations.values())
    parts["extraction_and_rest"] = total - sum(parts.values())
    parts["total"] = total
    return {part: round(seconds, 1) for part, seconds in parts.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", help="results.json of the run before the change")
    parser.add_argument("after", help="results.json of the run after it")
    parser.add_argument("--name", required=True, help="the backbone's name in the keys, e.g. vgg16")
    parser.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "speed.json"))
    settings = parser.parse_args(argv)
    runs = {}
    for when in ("before", "after"):
        with open(getattr(settings, when)) as file:
            runs[when] = seconds_by_part(json.load(file))
    name = settings.name
    entry = {f"{name}_seconds_before": runs["before"]["total"], f"{name}_seconds_after": runs["after"]["total"],
             f"{name}_ratio": round(runs["after"]["total"] / runs["before"]["total"], 3),
             f"{name}_parts_before": runs["before"], f"{name}_parts_after": runs["after"],
             f"{name}_results": [settings.before, settings.after]}
    results = read_speed_json(settings.json)
    results["benchmark"] = {**results.get("benchmark", {}), **entry}
    write_speed_json(results, settings.json)
    print(json.dumps(entry, indent=1))


if __name__ == "__main__":
    main()
