"""The benchmark end to end on a tiny image folder, and its report."""

import json
import os

import keras
import numpy as np
import pandas as pd
import pytest

from evaluation.benchmark import run_benchmark
from evaluation.cli import main
from evaluation.finetune import FineTunedClassifier
from evaluation.report import summary_table
from tests.conftest import make_tiny_backbone, write_image_folder

FAST = dict(schedule=[("all", 1e-3, 1)], simclr=dict(pooling="avg", batch_size=4, feat_dims_ph=(16, 8)),
            finetune=dict(schedule=[(0, 1e-3, 1), ("all", 1e-4, 1)]), knn=dict(k=3, weights="uniform"), verbose=0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("bench") / "images", n_per_class=12)


@pytest.fixture(scope="module")
def benchmark_run(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_out")
    keras.utils.set_random_seed(0)
    records = run_benchmark(folder, make_tiny_backbone(), out, fractions=(1.0, 0.2), runs=2, **FAST)
    return records, out


def test_records_cover_every_cell_with_true_label_counts(benchmark_run):
    records, _ = benchmark_run
    assert len(records) == 2 * 3 * 2 * 2  # stages x classifiers x fractions x runs
    assert set(records["stage"]) == {"before", "after"} and set(records["classifier"]) == {"linear", "knn", "fine_tuned"}
    n_train = records.loc[records["fraction"] == 1.0, "n_labels"].unique()
    assert len(n_train) == 1
    assert set(records.loc[records["fraction"] == 0.2, "n_labels"]) == {int(np.floor(0.2 * n_train[0] + 0.5))}
    assert records["accuracy"].between(0, 1).all()
    assert set(records.loc[records["stage"] == "after", "method"]) == {"simclr"}


def test_results_json_loads_into_a_dataframe_with_settings_once(benchmark_run):
    records, out = benchmark_run
    results = json.loads((out / "results.json").read_text())
    frame = pd.DataFrame(results["records"])
    pd.testing.assert_frame_equal(frame, records)
    for key in ("backbone", "method", "stage", "classifier", "fraction", "run", "n_labels", "accuracy",
                "val_accuracy", "selected"):
        assert key in frame.columns
    assert results["settings"]["runs"] == 2 and results["versions"]["keras"] == keras.__version__
    assert results["settings"]["simclr"] == FAST["simclr"] | {"feat_dims_ph": [16, 8]}
    assert results["settings"]["finetune"]["schedule"] == [[0, 1e-3, 1], ["all", 1e-4, 1]]


def test_every_record_says_what_its_classifier_selected(benchmark_run):
    records, _ = benchmark_run
    by_classifier = records.groupby("classifier")["selected"]
    assert all(set(selected) == {"C"} and selected["C"] > 0 for selected in by_classifier.get_group("linear"))
    assert all(selected == {"k": 3} for selected in by_classifier.get_group("knn"))
    for selected in by_classifier.get_group("fine_tuned"):
        assert selected["round"] in (1, 2) and selected["epoch"] >= 1
    assert records["val_accuracy"].between(0, 1).all()


def test_report_and_plots_are_written(benchmark_run):
    records, out = benchmark_run
    report = (out / "report.md").read_text()
    assert "| fraction | classifier | labels | before | after |" in report
    assert "## Durations" in report and "## Settings" in report
    for plot in ("accuracy_vs_fraction.png", "tsne.png", "training_curves.png"):
        assert (out / plot).stat().st_size > 0
    assert (out / "simclr_run_0" / "base_model.keras").exists()


def test_linear_and_knn_cells_repeat_exactly_with_the_same_seed(folder, benchmark_run, tmp_path):
    records, out = benchmark_run
    again = run_benchmark(folder, make_tiny_backbone(), tmp_path, fractions=(1.0, 0.2), runs=2,
                          adapted=str(out / "simclr_run_0" / "base_model.keras"), classifiers=("linear", "knn"),
                          **FAST)
    # "before" used a backbone initialised with the same global seed: compare the adapted stage instead
    mine = records[(records["stage"] == "after") & records["classifier"].isin(["linear", "knn"])]
    theirs = again[again["stage"] == "after"]
    np.testing.assert_allclose(mine["accuracy"].to_numpy(), theirs["accuracy"].to_numpy())


def test_summary_table_has_mean_and_std_per_cell(benchmark_run):
    table = summary_table(benchmark_run[0])
    assert list(table["fraction"]) == [1.0] * 3 + [0.2] * 3
    assert list(table["classifier"][:3]) == ["linear", "knn", "fine_tuned"]
    assert all(" ± " in cell and cell.endswith("(2)") for cell in table["before"])


def test_supervised_baseline_records_scratch(folder, tmp_path):
    records = run_benchmark(folder, make_tiny_backbone(), tmp_path, fractions=(1.0,), runs=1, supervised_baseline=True,
                            adapted=None, classifiers=("linear",), **FAST)
    scratch = records[records["stage"] == "scratch"]
    assert len(scratch) == 1 and scratch["classifier"].iloc[0] == "supervised"


def test_nnclr_records_have_method_nnclr(folder, tmp_path):
    settings = dict(FAST)
    settings["simclr"] = {**FAST["simclr"], "positives": "nearest_neighbour", "queue_size": 16}
    records = run_benchmark(folder, make_tiny_backbone(), tmp_path, fractions=(1.0,), runs=1, classifiers=("knn",),
                            **settings)
    assert records.set_index("stage")["method"].to_dict() == {"before": "none", "after": "nnclr"}
    settings = json.loads((tmp_path / "results.json").read_text())["settings"]
    assert settings["simclr"]["positives"] == "nearest_neighbour" and settings["simclr"]["queue_size"] == 16


@pytest.mark.parametrize("kwargs,match", [
    ({"fractions": (0.0,)}, "fraction"),
    ({"fractions": (0.01,)}, "fraction"),
    ({"runs": 0}, "runs"),
    ({"classifiers": ("svm",)}, "svm"),
    ({"simclr": {"temprature": 0.1}}, "temprature"),
    ({"finetune": {"patience": -1}}, "patience"),
])
def test_bad_settings_fail_before_any_training(folder, tmp_path, kwargs, match):
    settings = {**FAST, "fractions": (1.0,), "runs": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        run_benchmark(folder, make_tiny_backbone(), tmp_path / "out", **settings)
    assert not (tmp_path / "out").exists()


def test_benchmark_command_on_a_folder(folder, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["benchmark", "--data", folder, "--backbone", "small_cnn", "--size", "16", "--batch-size", "4",
            "--feat-dims", "16,8", "--schedule", "all:1e-3:1", "--finetune-schedule", "0:1e-3:1", "--fractions",
            "1.0,0.2", "--runs", "1", "--classifiers", "linear,knn", "--knn-k", "auto", "--knn-temperature", "0.1",
            "--pooling", "avg", "--out", str(out)]
    assert main(argv) == 0
    assert "| fraction | classifier |" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert len(results["records"]) == 2 * 2 * 2
    assert results["settings"]["knn"] == {"k": "auto", "weights": "similarity", "temperature": 0.1}
    # k chosen on the labelled images: never more than the smallest class holds (at 20 %, 1-2 a class).
    for record in results["records"]:
        if record["classifier"] == "knn":
            smallest = 2 if record["fraction"] == 0.2 else record["n_labels"] // 3
            assert 1 <= record["selected"]["k"] <= smallest


def test_embed_command_writes_csv_and_npy(folder, tmp_path):
    common = ["embed", "--data", folder, "--backbone", "small_cnn", "--size", "16"]
    assert main(common + ["--out", str(tmp_path / "e.csv")]) == 0
    table = pd.read_csv(tmp_path / "e.csv")
    assert len(table) == 36 and list(table.columns[:2]) == ["filename", "label"] and "e127" in table.columns
    assert main(common + ["--out", str(tmp_path / "e.npy")]) == 0
    assert np.load(tmp_path / "e.npy").shape == (36, 128)
    assert len(pd.read_csv(tmp_path / "e.npy.index.csv")) == 36
    assert main(common + ["--out", str(tmp_path / "e.txt")]) == 2
    assert not os.path.exists(tmp_path / "e.txt")


class Killed(Exception):
    """Stands for a kill or Ctrl-C (pytest keeps KeyboardInterrupt for itself)."""


def test_an_interrupted_benchmark_resumes_without_running_finished_cells(folder, tmp_path, monkeypatch):
    calls, killed = [], []
    real = FineTunedClassifier.fit

    def flaky(self, *args, **kwargs):
        calls.append(self.seed)
        if len(calls) == 3 and not killed:
            killed.append(True)
            raise Killed  # in the third fine-tuning of the run
        return real(self, *args, **kwargs)

    monkeypatch.setattr(FineTunedClassifier, "fit", flaky)
    settings = dict(fractions=(1.0, 0.2), runs=2, classifiers=("linear", "fine_tuned"), **FAST)
    with pytest.raises(Killed):  # a run that may need resuming starts with resume=True: it writes in place
        run_benchmark(folder, make_tiny_backbone(), tmp_path, resume=True, **settings)
    saved = json.loads((tmp_path / "results.json").read_text())["records"]
    assert len(saved) == 5  # the cells before the interruption: 2 fine-tuned, 3 linear
    calls.clear()
    records = run_benchmark(folder, make_tiny_backbone(), tmp_path, resume=True, **settings)
    assert len(records) == 2 * 2 * 2 * 2 and len(calls) == 2 * 2 * 2 - 2  # finished cells were not run again
    keys = records[["stage", "classifier", "fraction", "run"]].astype(str).agg("/".join, axis=1)
    assert keys.is_unique
    kept = pd.DataFrame(saved)
    pd.testing.assert_frame_equal(records.iloc[:5][kept.columns], kept)  # the finished cells, as they were
    with pytest.raises(ValueError, match=r"settings differ in \['runs'\]"):
        run_benchmark(folder, make_tiny_backbone(), tmp_path, resume=True, **{**settings, "runs": 3})


def test_no_frozen_cache_fine_tunes_end_to_end(folder, tmp_path, monkeypatch):
    seen = []
    real = FineTunedClassifier.fit

    def recording(self, *args, **kwargs):
        seen.append(self.cache_frozen)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(FineTunedClassifier, "fit", recording)
    argv = ["benchmark", "--data", folder, "--backbone", "small_cnn", "--size", "16", "--batch-size", "4",
            "--feat-dims", "16,8", "--schedule", "all:1e-3:1", "--finetune-schedule", "0:1e-3:1", "--fractions",
            "1.0", "--runs", "1", "--classifiers", "fine_tuned", "--pooling", "avg", "--no-frozen-cache",
            "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    assert seen == [False, False]  # before and after SimCLR
    assert json.loads((tmp_path / "out" / "results.json").read_text())["settings"]["finetune"]["cache_frozen"] is False


def test_an_interrupted_fresh_benchmark_leaves_its_out_folder_as_it_was(folder, tmp_path, monkeypatch):
    def killed(self, *args, **kwargs):
        raise Killed

    monkeypatch.setattr(FineTunedClassifier, "fit", killed)
    out = tmp_path / "out"
    with pytest.raises(Killed):
        run_benchmark(folder, make_tiny_backbone(), out, fractions=(1.0,), runs=1, **FAST)
    assert not out.exists() and os.listdir(tmp_path) == []


def test_results_name_the_code_as_it_was_when_the_run_started(folder, tmp_path, monkeypatch):
    from evaluation import benchmark

    calls = []

    def at_start():
        calls.append(len(calls))
        return {"git_commit": "abc123", "git_dirty": False, "call": len(calls)}

    monkeypatch.setattr(benchmark, "versions", at_start)
    run_benchmark(folder, make_tiny_backbone(), tmp_path / "out", fractions=(1.0,), runs=1, classifiers=("knn",),
                  **FAST)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert calls == [0] and results["versions"] == {"git_commit": "abc123", "git_dirty": False, "call": 1}


def test_versions_say_whether_the_tree_differs_from_the_commit():
    from evaluation.report import versions

    found = versions()
    assert set(found) >= {"git_commit", "git_dirty", "keras", "tensorflow", "keras_backend"}
    assert found["keras"] == keras.__version__ and found["keras_backend"] == keras.backend.backend()
    assert (found["git_commit"] is None) == (found["git_dirty"] is None)


def test_the_benchmark_says_which_cell_of_how_many_and_how_long_is_left(folder, tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="evaluation.benchmark"):
        run_benchmark(folder, make_tiny_backbone(), tmp_path / "out", fractions=(1.0, 0.2), runs=1,
                      classifiers=("knn",), **FAST)
    steps = [line for line in caplog.text.splitlines() if " of 4, " in line]
    assert [line.split("cell ")[1].split(" of")[0] for line in steps] == ["1", "2", "3", "4"]
    assert all("elapsed, about" in line and "left" in line for line in steps)


def test_a_probe_on_the_same_labels_is_computed_once_and_recorded_per_run(benchmark_run):
    records, out = benchmark_run
    shared = records[records["shared_from_run"].notna()]
    # At 100 % both runs have every label: run 1's linear and kNN probes repeat run 0's; fine-tuning never does.
    assert sorted(zip(shared["stage"], shared["classifier"], shared["fraction"], shared["run"])) == [
        (stage, classifier, 1.0, 1) for stage in ("after", "before") for classifier in ("knn", "linear")]
    assert (shared["shared_from_run"] == 0).all() and (shared["seconds"] == 0).all()
    for _, record in shared.iterrows():
        source = records[(records["stage"] == record["stage"]) & (records["classifier"] == record["classifier"])
                         & (records["fraction"] == 1.0) & (records["run"] == 0)].iloc[0]
        assert (record["accuracy"], record["val_accuracy"], record["selected"]) == (
            source["accuracy"], source["val_accuracy"], source["selected"])
    report = (out / "report.md").read_text()
    assert "Computed once: before linear at 100 % (runs 1 as run 0)" in report


def test_shared_probes_are_not_fitted_again_even_after_a_resume(folder, benchmark_run, tmp_path, monkeypatch):
    from evaluation import benchmark
    from evaluation.linear import LinearProbe

    fitted = []
    real_fit, real_write = LinearProbe.fit, benchmark.write_results

    def counting_fit(self, features, labels):
        fitted.append(len(labels))
        return real_fit(self, features, labels)

    def killed_at_the_second_record(out, records, *args):
        if len(records) == 2:
            raise Killed
        return real_write(out, records, *args)

    monkeypatch.setattr(LinearProbe, "fit", counting_fit)
    monkeypatch.setattr(benchmark, "write_results", killed_at_the_second_record)
    adapted = str(benchmark_run[1] / "simclr_run_0" / "base_model.keras")
    settings = dict(fractions=(1.0, 0.2), runs=3, classifiers=("linear",), adapted=adapted, **FAST)
    with pytest.raises(Killed):  # after run 0 at 100 %, in the record of run 1
        run_benchmark(folder, make_tiny_backbone(), tmp_path, resume=True, **settings)
    assert len(json.loads((tmp_path / "results.json").read_text())["records"]) == 1
    n_all = fitted[0]
    monkeypatch.setattr(benchmark, "write_results", real_write)
    fitted.clear()
    records = run_benchmark(folder, make_tiny_backbone(), tmp_path, resume=True, **settings)
    n_fifth = int(np.floor(0.2 * n_all + 0.5))
    # Runs 1 and 2 at 100 % come from run 0's record; every 20 % run has other labels and is fitted.
    assert fitted == [n_fifth] * 3 + [n_all] + [n_fifth] * 3
    assert records.groupby(["stage", "fraction"])["shared_from_run"].count().to_dict() == {
        ("after", 0.2): 0, ("after", 1.0): 2, ("before", 0.2): 0, ("before", 1.0): 2}


def test_the_shared_100_percent_cell_is_the_record_of_computing_it_each_run(folder, benchmark_run, tmp_path,
                                                                            monkeypatch):
    from evaluation.benchmark import Benchmark

    adapted = str(benchmark_run[1] / "simclr_run_0" / "base_model.keras")
    settings = dict(fractions=(1.0,), runs=3, classifiers=("linear", "knn"), adapted=adapted, **FAST)
    keras.utils.set_random_seed(0)  # the same "before" backbone in both
    shared = run_benchmark(folder, make_tiny_backbone(), tmp_path / "shared", **settings)
    monkeypatch.setattr(Benchmark, "_same_probe_earlier", lambda *args: None)
    keras.utils.set_random_seed(0)
    computed = run_benchmark(folder, make_tiny_backbone(), tmp_path / "computed", **settings)
    assert shared["shared_from_run"].notna().sum() == 2 * 2 * 2 and "shared_from_run" not in computed
    columns = ["stage", "classifier", "run", "n_labels", "accuracy", "val_accuracy", "selected"]
    pd.testing.assert_frame_equal(shared[columns], computed[columns])


def test_fine_tuned_cells_of_a_stage_compute_each_frozen_activation_once(folder, benchmark_run, tmp_path,
                                                                         monkeypatch):
    from evaluation.frozen_prefix import FrozenPrefix

    computed = []
    real = FrozenPrefix._forward

    def counting(self, images):
        computed.append(len(images))
        return real(self, images)

    monkeypatch.setattr(FrozenPrefix, "_forward", counting)
    adapted = str(benchmark_run[1] / "simclr_run_0" / "base_model.keras")
    records = run_benchmark(folder, make_tiny_backbone(), tmp_path, fractions=(1.0, 0.2), runs=2,
                            classifiers=("fine_tuned",), adapted=adapted, **FAST)
    sizes = json.loads((tmp_path / "results.json").read_text())["settings"]["images"]
    # Round 1 of each of the 4 cells of a stage caches the frozen backbone's activations of its labelled images
    # and of val; round 2 trains everything. The images are computed once per stage, not once per cell.
    assert sum(computed) == 2 * (sizes["train"] + sizes["val"])
    assert len(records) == 2 * 4


def test_summary_table_gives_the_spread_between_simclr_runs():
    rows = [{"stage": "before", "classifier": "linear", "fraction": 0.2, "run": run, "n_labels": 8, "accuracy": a}
            for run, a in [(0, 0.50), (1, 0.54)]]
    runs = {0: [0.70, 0.74], 1: [0.80, 0.82]}  # SimCLR run: accuracies over two label subsets
    rows += [{"stage": "after", "classifier": "linear", "fraction": 0.2, "run": run, "n_labels": 8, "accuracy": a,
              "pretrain_run": pretrain_run} for pretrain_run, values in runs.items() for run, a in enumerate(values)]
    row = summary_table(rows).iloc[0]
    between = np.std([np.mean(values) for values in runs.values()], ddof=1)
    assert row["std between SimCLR runs"] == f"{between:.3f} (2 runs)"
    assert row["after"] == f"{np.mean(sum(runs.values(), [])):.3f} ± {np.std(sum(runs.values(), []), ddof=1):.3f} (4)"
    assert row["gain"] == f"{np.mean(sum(runs.values(), [])) - 0.52:+.3f}"  # larger than the spread: not marked
    rows = [dict(row, accuracy=row["accuracy"] + (0.25 if row["stage"] == "before" else 0)) for row in rows]
    assert summary_table(rows).iloc[0]["gain"].endswith("(within the spread between SimCLR runs)")
    one_run = [row for row in rows if row.get("pretrain_run", 0) == 0]
    assert "gain" not in summary_table(one_run).columns


def test_a_benchmark_with_two_simclr_runs_reports_their_spread(folder, tmp_path):
    records = run_benchmark(folder, make_tiny_backbone(), tmp_path, fractions=(0.5,), runs=2, pretrain_runs=2,
                            classifiers=("linear",), **FAST)
    after = records[records["stage"] == "after"]
    assert sorted(after["pretrain_run"].unique()) == [0, 1] and len(after) == 4
    between = after.groupby("pretrain_run")["accuracy"].mean().std()
    report = (tmp_path / "report.md").read_text()
    assert "std between SimCLR runs" in report and f"{between:.3f} (2 runs)" in report
