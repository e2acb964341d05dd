"""Where a VGG16 fine-tuned cell's time goes: caching the frozen prefix, fitting each round, evaluating.

One TrashNet cell (run 0, the fraction given; the benchmark's fine-tuning schedule) with timers around
`round_cache`, `Model.fit` and `Model.evaluate` (by model: the suffix's validation inside fit, the whole
classifier's final val and test accuracy).

    python benchmarks/finetune_profile.py 0.05
"""
import collections, json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)
import keras
import evaluation.finetune as finetune
from data_generators import DataGeneratorClass, split_sources, take_rows
from evaluation.fractions import label_subset
from simclr_wrap.backbones import load_backbone
spent = collections.defaultdict(float)
def timed(name, function):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - started
    return wrapper
finetune.round_cache = timed("cache the frozen prefix's activations", finetune.round_cache)
fit, evaluate = keras.Model.fit, keras.Model.evaluate
rounds = []
def fit_round(self, *args, **kwargs):
    started = time.perf_counter(); history = fit(self, *args, **kwargs)
    rounds.append((self.name, len(history.epoch), round(time.perf_counter() - started, 1))); return history
keras.Model.fit = fit_round
def evaluate_by_model(self, *args, **kwargs):
    return timed(f"evaluate {self.name}", evaluate)(self, *args, **kwargs)
keras.Model.evaluate = evaluate_by_model
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared"))
fraction = float(sys.argv[1])
model, preprocess = load_backbone("vgg16", (80, 80, 3), weights=f"{SHARED}/backbones/vgg16_hed_notop.weights.h5", preprocess="caffe")
parts = split_sources(f"{SHARED}/data/trashnet/split.csv")
classes = sorted(set(parts["train"]["class_label"]))
gen = lambda part, shuffle=False: DataGeneratorClass(part, batch_size=32, classes=classes, shuffle=shuffle, seed=0, width=80, height=80, preprocess_input=preprocess)
subset = label_subset(gen(parts["train"]).labels, fraction, seed=0)
started = time.perf_counter()
result = finetune.finetune_classifier(model, gen(take_rows(parts["train"], subset), True), gen(parts["val"]), gen(parts["test"]),
                                      schedule=[(0, 1e-3, 30), ("block5_conv1", 1e-4, 10)], pooling="flatten", seed=0)
total = time.perf_counter() - started
print("RESULT", json.dumps({"fraction": fraction, "total": round(total, 1), "rounds (model, epochs, seconds)": rounds,
                            **{k: round(v, 1) for k, v in spent.items()}}))
