"""Choose the distilled classifier's temperature on the validation split: one teacher per cell, a student per temperature.

For each label fraction and run, the fine-tuned classifier (the teacher) is
fitted once on the cell's labelled subset, exactly as in the benchmark, and a
`DistilledClassifier` student is trained from it at each temperature. Every
configuration is logged with its validation accuracy (what selects) and its
test accuracy (reported, never used to choose), one JSON line each.

    # the digits demo (a backbone adapted by `simclr-wrap benchmark --out DEMO` first)
    python benchmarks/distill_temperature.py --adapted DEMO/simclr_run_0/base_model.keras \
        --out benchmarks/distill_digits.jsonl
    # TrashNet, VGG16 at 80x80 adapted by tune_trashnet.py, at 5 % of the labels
    python benchmarks/distill_temperature.py --data ../shared/data/trashnet/split.csv --backbone vgg16 \
        --preprocess caffe --pooling flatten \
        --finetune-schedule 0:0.001:30,block5_conv1:0.0001:10 --fractions 0.05 --runs 1 \
        --adapted runs/tune_vgg16_view_bank/v1_block5_lr1e-4_t0.2/base_model.keras \
        --out benchmarks/trashnet/distill_vgg16.jsonl

`--student-schedule` (repeatable) tries students with other schedules than the
teacher's, e.g. "0:0.001:30", a student that trains only its head on the
adapted backbone's frozen features; each row logs its student's schedule.
"""

import argparse
import json
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evaluation.cli import DEMO_PRESET, _fractions, _schedule  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="a split CSV or class folder; without it, the digits demo's digits 5-9")
    parser.add_argument("--backbone", default="small_cnn", help="its name, for the log")
    parser.add_argument("--preprocess", default="unit", help="the adapted backbone's preprocessing mode")
    parser.add_argument("--size", type=int, default=32, help="the digits demo's image side")
    parser.add_argument("--pooling", default="avg")
    parser.add_argument("--adapted", required=True, help="the adapted .keras backbone (teacher's and student's)")
    parser.add_argument("--finetune-schedule", type=_schedule, default=DEMO_PRESET["finetune"]["schedule"])
    parser.add_argument("--fractions", type=_fractions, default=(0.2, 0.05))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--temperatures", default="0.5,1,2")
    parser.add_argument("--student-schedule", type=_schedule, action="append",
                        help="a student's schedule (repeatable; default: the teacher's, --finetune-schedule)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="JSON lines, appended")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import keras

    from data_generators import split_sources
    from evaluation.benchmark import _LabelledSplits
    from evaluation.distill import DistilledClassifier
    from evaluation.finetune import FineTunedClassifier
    from evaluation.fractions import label_subset
    from evaluation.frozen_prefix import PrefixActivations
    from evaluation.pretraining import TEST_FRACTION, VAL_FRACTION
    from simclr_wrap.backbones import get_preprocessing

    if args.data:
        data = args.data
    else:
        from evaluation.demo import digits_story

        _, data = digits_story(size=args.size, seed=args.seed)
    preprocess = get_preprocessing(args.preprocess)
    adapted = keras.models.load_model(args.adapted, compile=False)
    splits = _LabelledSplits(split_sources(data, VAL_FRACTION, TEST_FRACTION, args.seed), adapted.input_shape[1:],
                             preprocess)
    finetune = FineTunedClassifier(schedule=args.finetune_schedule, pooling=args.pooling, seed=args.seed)
    memo = PrefixActivations(finetune.cache_bytes)
    for fraction in args.fractions:
        for run in range(args.runs):
            seed = args.seed + run
            subset = label_subset(splits.train_labels, fraction, seed=seed)
            started = time.perf_counter()
            teacher = FineTunedClassifier.from_config({**finetune.get_config(), "seed": seed}).fit(
                adapted, splits.train_subset(subset, seed), splits.data["val"], prefix_activations=memo)
            scores = teacher.evaluate(splits.data["test"], prefix_activations=memo)
            rows = [{"classifier": "fine_tuned", "temperature": None, "val_accuracy": scores["val_accuracy"],
                     "accuracy": scores["accuracy"], "seconds": round(time.perf_counter() - started, 1)}]
            for schedule in args.student_schedule or [args.finetune_schedule]:
                for temperature in map(float, args.temperatures.split(",")):
                    started = time.perf_counter()
                    student = DistilledClassifier(temperature=temperature, student={
                        **finetune.get_config(), "schedule": schedule, "seed": seed})
                    student.fit(adapted, teacher, splits.generator(splits.parts["train"], shuffle=True, seed=seed),
                                subset, splits.data["val"], prefix_activations=memo)
                    scores = student.evaluate(splits.data["test"], prefix_activations=memo)
                    rows.append({"classifier": "distilled", "temperature": temperature,
                                 "student_schedule": student.student.get_config()["schedule"],
                                 "val_accuracy": scores["val_accuracy"], "accuracy": scores["accuracy"],
                                 "seconds": round(time.perf_counter() - started, 1)})
            with open(args.out, "a") as file:
                for row in rows:
                    file.write(json.dumps({"data": args.data or "digits demo", "backbone": args.backbone,
                                           "adapted": args.adapted, "fraction": fraction, "run": run,
                                           "n_labels": len(subset), **row}) + "\n")
            for row in rows:
                print(f"fraction {fraction} run {run} {row['classifier']} T={row['temperature']} "
                      f"schedule={row.get('student_schedule', '(the teacher)')}: "
                      f"val {row['val_accuracy']:.3f} test {row['accuracy']:.3f} ({row['seconds']} s)", flush=True)


if __name__ == "__main__":
    main()
