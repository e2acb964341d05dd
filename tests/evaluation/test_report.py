"""The report's plots: what they show (read back from the Figure) and that they are written atomically."""

import os

import matplotlib.colors
import numpy as np
import pytest

from evaluation.report import (
    accuracy_vs_fraction_figure,
    plot_accuracy_vs_fraction,
    plot_training_curves,
    plot_tsne,
    round_starts,
    training_curves_figure,
    tsne_figure,
)

NAMES = ["cardboard", "glass", "metal"]


def legend_texts(legend):
    return [text.get_text() for text in legend.get_texts()]


def assert_one_png(folder, name):
    assert os.listdir(folder) == [name]  # no temporary file left
    with open(os.path.join(folder, name), "rb") as file:
        assert file.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def history():
    return {"nt_xent": [5.0, 4.5, 4.0, 3.8, 3.5, 3.4], "val_nt_xent": [5.1, 4.7, 4.2, 4.0, 3.9, 3.9],
            "contrastive_accuracy": [0.1, 0.2, 0.3, 0.35, 0.4, 0.45], "val_contrastive_accuracy": [0.1] * 6,
            "val_probe_accuracy": [0.3, 0.4, float("nan"), 0.5, 0.55, 0.6], "round": [1, 1, 2, 2, 2, 3]}


@pytest.fixture
def records():
    rows = []
    for stage, base in (("before", 0.4), ("after", 0.6)):
        for classifier in ("knn", "linear"):
            for fraction in (1.0, 0.2, 0.05):
                for run in range(2):
                    rows.append(dict(stage=stage, classifier=classifier, fraction=fraction, run=run,
                                     n_labels=int(fraction * 100), accuracy=base + fraction / 4 + run / 50))
    return rows


@pytest.fixture
def features_by_stage():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 8)
    return {stage: (rng.normal(size=(24, 6)) + spread * labels[:, None], labels)
            for stage, spread in (("before", 0.5), ("after", 3.0))}


def test_round_starts_are_the_first_epochs_of_each_later_round():
    assert round_starts([1, 1, 2, 2, 2, 3]) == [(3, 2), (6, 3)]
    assert round_starts([1, 1, 1]) == round_starts([]) == []


def test_training_curves_mark_the_rounds_on_whole_epochs(history):
    figure = training_curves_figure(history)
    axes = figure.axes
    assert [axis.get_title() for axis in axes] == [
        "NT-Xent (lower is better)", "contrastive accuracy", "online linear probe accuracy"]
    for axis in axes:
        boundaries = [line.get_xdata()[0] for line in axis.lines if line.get_linestyle() == "--"]
        assert boundaries == [2.5, 5.5]  # between epochs 2|3 and 5|6, epochs counted from 1
        assert [text.get_text().strip() for text in axis.texts] == ["round 2", "round 3"]
        assert axis.get_xlim() == (0.5, 6.5)
        ticks = [tick for tick in axis.get_xticks() if 0.5 <= tick <= 6.5]
        assert ticks and all(float(tick).is_integer() and 1 <= tick <= 6 for tick in ticks)
    assert legend_texts(axes[0].get_legend()) == ["train", "validation"]
    assert legend_texts(axes[2].get_legend()) == ["validation"]  # the probe logs validation only
    assert list(axes[0].lines[0].get_xdata()) == [1, 2, 3, 4, 5, 6]


def test_training_curves_without_rounds_have_no_boundaries(history):
    del history["round"]
    figure = training_curves_figure(history)
    assert all(not axis.texts and all(line.get_linestyle() != "--" for line in axis.lines) for axis in figure.axes)


def test_training_curves_png_is_written_atomically(tmp_path, history):
    path = str(tmp_path / "plots" / "training_curves.png")
    assert plot_training_curves(history, path) == path
    assert_one_png(tmp_path / "plots", "training_curves.png")


def test_accuracy_vs_fraction_ticks_are_the_fractions_as_percentages(records):
    figure = accuracy_vs_fraction_figure(records)
    axes = figure.axes
    assert [axis.get_title() for axis in axes] == ["linear", "knn"]  # CLASSIFIER_ORDER
    for axis in axes:
        assert [label.get_text() for label in axis.get_xticklabels()] == ["5 %", "20 %", "100 %"]
        assert list(axis.get_xticks()) == pytest.approx([5, 20, 100])
        assert axis.get_xscale() == "log"
        assert axis.get_xticklabels(minor=True) == []
        assert len(axis.containers) == 2  # one error bar per stage
        assert all(container.has_yerr for container in axis.containers)
    assert legend_texts(figure.legends[0]) == ["before", "after"]


def test_accuracy_vs_fraction_shows_mean_and_std(records):
    axis = accuracy_vs_fraction_figure(records).axes[0]
    line, _, (bars,) = axis.containers[0]  # linear, before
    means = [np.mean([0.4 + fraction / 4, 0.4 + fraction / 4 + 1 / 50]) for fraction in (0.05, 0.2, 1.0)]
    assert list(line.get_ydata()) == pytest.approx(means)
    low, high = bars.get_segments()[0][:, 1]
    assert high - low == pytest.approx(2 * np.std([0, 1 / 50], ddof=1))


def test_close_fractions_stay_on_a_linear_axis(records):
    close = [dict(record, fraction=0.5 + record["fraction"] / 4) for record in records]  # 51.25 %, 55 %, 75 %
    axis = accuracy_vs_fraction_figure(close).axes[0]
    assert axis.get_xscale() == "linear"
    assert [label.get_text() for label in axis.get_xticklabels()] == ["51.25 %", "55 %", "75 %"]


def test_accuracy_vs_fraction_png_is_written_atomically(tmp_path, records):
    assert plot_accuracy_vs_fraction(records, tmp_path / "a.png") == tmp_path / "a.png"
    assert_one_png(tmp_path, "a.png")


def test_tsne_legend_names_the_classes_with_distinct_colours(features_by_stage):
    figure = tsne_figure(features_by_stage, class_names=NAMES)
    assert len(figure.legends) == 1 and all(axis.get_legend() is None for axis in figure.axes)
    legend = figure.legends[0]
    assert legend_texts(legend) == NAMES
    colours = [matplotlib.colors.to_hex(handle.get_color()) for handle in legend.legend_handles]
    assert len(set(colours)) == 3
    assert [axis.get_title() for axis in figure.axes] == ["test features, before", "test features, after"]
    points = figure.axes[1].collections[0]
    point_colours = [matplotlib.colors.to_hex(colour) for colour in points.get_facecolors()]
    assert [point_colours[0], point_colours[8], point_colours[16]] == colours  # each class in its legend colour


def test_tsne_without_names_shows_the_label_values(features_by_stage):
    assert legend_texts(tsne_figure(features_by_stage).legends[0]) == ["0", "1", "2"]
    named = {stage: (features, np.asarray(NAMES)[labels]) for stage, (features, labels) in features_by_stage.items()}
    assert legend_texts(tsne_figure(named).legends[0]) == NAMES
    as_dict = tsne_figure(features_by_stage, class_names={0: "a", 1: "b", 2: "c"})
    assert legend_texts(as_dict.legends[0]) == ["a", "b", "c"]


def test_tsne_class_names_must_name_every_label(features_by_stage):
    with pytest.raises(ValueError, match="Expected class_names to name every label .* no name for label 2"):
        tsne_figure(features_by_stage, class_names=NAMES[:2])


def test_tsne_png_is_written_atomically(tmp_path, features_by_stage):
    assert plot_tsne(features_by_stage, str(tmp_path / "tsne.png"), seed=1, class_names=NAMES) == str(
        tmp_path / "tsne.png")
    assert_one_png(tmp_path, "tsne.png")
