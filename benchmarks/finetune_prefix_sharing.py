"""VGG16 fine-tuned cells of one TrashNet stage with the frozen prefix's activations shared across cells, and without.

Three cells in the benchmark's order and settings (20 % run 0, 5 % run 0, 5 % run 1; the benchmark's
fine-tuning schedule), each with its own activations (`prefix_activations=None`) and then sharing one
`PrefixActivations`; every image decoded beforehand, untimed. Prints seconds and test accuracy per cell.

    python benchmarks/finetune_prefix_sharing.py
"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)
from data_generators import DataGeneratorClass, split_sources, take_rows
from evaluation.finetune import FineTunedClassifier
from evaluation.fractions import label_subset
from evaluation.frozen_prefix import PrefixActivations
from simclr_wrap.backbones import load_backbone
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared"))
model, preprocess = load_backbone("vgg16", (80, 80, 3), weights=f"{SHARED}/backbones/vgg16_hed_notop.weights.h5", preprocess="caffe")
parts = split_sources(f"{SHARED}/data/trashnet/split.csv")
classes = sorted(set(parts["train"]["class_label"]))
gen = lambda part, shuffle=False, seed=0: DataGeneratorClass(part, batch_size=32, classes=classes, shuffle=shuffle, seed=seed, width=80, height=80, preprocess_input=preprocess)
labels = gen(parts["train"]).labels
val, test = gen(parts["val"]), gen(parts["test"])
cells = [(0.2, 0), (0.05, 0), (0.05, 1)]
def stage(shared):
    memo = PrefixActivations() if shared else None
    out = []
    for fraction, run in cells:
        subset = label_subset(labels, fraction, seed=run)
        started = time.perf_counter()
        classifier = FineTunedClassifier(schedule=[(0, 1e-3, 30), ("block5_conv1", 1e-4, 10)], pooling="flatten", seed=run)
        classifier.fit(model, gen(take_rows(parts["train"], subset), True, run), val, prefix_activations=memo)
        accuracy = classifier.evaluate(test)["accuracy"]
        out.append((fraction, run, round(time.perf_counter() - started, 1), round(accuracy, 4)))
    return out
for generator in (gen(parts["train"]), val, test):  # decode every image once (the decoded-image cache), untimed
    generator.source.check_decodable()
results = {}
for turn in range(1):
    for shared in (False, True):
        results.setdefault("shared" if shared else "per_cell", []).append(stage(shared))
        print(json.dumps(results), flush=True)
print("RESULT", json.dumps(results))
