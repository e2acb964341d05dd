"""bfloat16 against float32: SimCLR's validation linear probes, summarised into speed.json's `bf16` (issue 13, item 4).

Reads `tune_trashnet.py` logs of the configurations of the `--configs`
files, which hold each configuration with `"precision": "float32"` and with
`"precision": "mixed_bfloat16"` (benchmarks/trashnet/configs_*_bf16.json),
one entry per pretraining seed, and writes per backbone the mean over seeds
of each precision and bfloat16's difference. The speed-ups are those of
`throughput.py` (frozen steps, `throughput.json`).

    python benchmarks/bf16_accuracy.py benchmarks/trashnet/tuning_h200.jsonl --json benchmarks/speed.json
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from speed_json import read_speed_json, write_speed_json  # noqa: E402
from tune_trashnet import over_seeds  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = [os.path.join(HERE, "trashnet", f"configs_{backbone}_bf16.json") for backbone in ("vgg16", "mobilenet_v2")]
THROUGHPUT = os.path.join(HERE, "throughput.json")


def precision_summary(logs, configs=CONFIGS):
    """{backbone: over_seeds of its float32 and mixed_bfloat16 entries, bfloat16 compared with float32}.

    Raises:
        ValueError: a configuration without a `precision` (it would follow
            the hardware, so its side is unknown).
    """
    precision_of = {}
    for path in configs:
        with open(path) as file:
            for config in json.load(file):
                if "precision" not in config:
                    raise ValueError(f"configuration {config['name']!r} of {path} has no 'precision': give each "
                                     "side its own ('float32' or 'mixed_bfloat16')")
                precision_of[config["name"]] = config["precision"]
    entries = [json.loads(line) for path in logs for line in open(path) if line.strip()]
    return {backbone: over_seeds([entry for entry in entries if entry["backbone"] == backbone],
                                 lambda entry: precision_of.get(entry["name"]), baseline="float32")
            for backbone in sorted({entry["backbone"] for entry in entries if entry["name"] in precision_of})}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="+", help="tune_trashnet.py logs")
    parser.add_argument("--configs", nargs="+", default=CONFIGS, help="the configuration files the logs ran")
    parser.add_argument("--json", help="speed.json to record `bf16` in")
    args = parser.parse_args(argv)
    summary = precision_summary(args.logs, args.configs)
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(THROUGHPUT) as file:
            throughput = json.load(file)
        vgg16 = summary.get("vgg16", {}).get("mixed_bfloat16", {})
        speed = read_speed_json(args.json)
        speed["bf16"] = {
            "speedup_vgg16": throughput.get("vgg16_frozen_step_ratio_mixed_bfloat16_over_default"),
            "speedup_mobilenet_v2": throughput.get("mobilenet_v2_frozen_step_ratio_mixed_bfloat16_over_default"),
            "val_linear_delta": vgg16.get("val_linear_1_delta"),
            "val_linear_delta_5_percent": vgg16.get("val_linear_0.05_delta"),
            "accuracy": summary, "logs": [os.path.relpath(path, os.path.dirname(HERE)) for path in args.logs]}
        write_speed_json(speed, args.json)


if __name__ == "__main__":
    main()
