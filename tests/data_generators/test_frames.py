"""Frames: folders, split files, stratified splits, dispatch and the digits demo."""

import os

import numpy as np
import pandas as pd
import pytest

from data_generators import digits_demo, frame_from_folder, load_frame, read_split_file, split_sources, stratified_split


def write_split_file(folder, rows, header="filename,label,split"):
    path = os.path.join(folder, "split.csv")
    with open(path, "w") as file:
        file.write("\n".join([header, *rows]) + "\n")
    return path


def test_frame_from_folder_lists_every_image_sorted(tiny_image_folder):
    frame = frame_from_folder(tiny_image_folder)
    assert frame.columns.tolist() == ["filename", "class_label"]
    assert len(frame) == 18
    assert frame["class_label"].value_counts().to_dict() == {"circle": 6, "square": 6, "stripes": 6}
    assert all(os.path.isabs(name) and os.path.isfile(name) for name in frame["filename"])
    assert frame.sort_values(["class_label", "filename"]).index.tolist() == list(range(18))
    assert all(os.path.basename(os.path.dirname(f)) == c for f, c in zip(frame["filename"], frame["class_label"]))


def test_frame_from_folder_skips_non_images_and_hidden_files(tiny_image_folder):
    open(os.path.join(tiny_image_folder, "circle", "notes.txt"), "w").close()
    open(os.path.join(tiny_image_folder, "circle", ".hidden.png"), "w").close()
    os.makedirs(os.path.join(tiny_image_folder, ".cache"))
    os.rename(
        os.path.join(tiny_image_folder, "square", "square_0.jpg"),
        os.path.join(tiny_image_folder, "square", "square_0.JPG"),
    )
    frame = frame_from_folder(tiny_image_folder)
    assert len(frame) == 18
    assert not any(name.endswith((".txt", ".hidden.png")) for name in frame["filename"])
    assert sorted(set(frame["class_label"])) == ["circle", "square", "stripes"]


def test_frame_from_folder_errors_name_the_folder(tmp_path, tiny_image_folder):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        frame_from_folder(tmp_path / "nowhere")
    a_file = tmp_path / "file.png"
    a_file.write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="file.png"):
        frame_from_folder(a_file)
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images found in .*empty"):
        frame_from_folder(tmp_path / "empty")
    os.makedirs(os.path.join(tiny_image_folder, "triangle"))
    with pytest.raises(ValueError, match="class folder .*triangle.* has no images"):
        frame_from_folder(tiny_image_folder)


def test_read_split_file_resolves_names_against_its_folder(tmp_path):
    absolute = str(tmp_path / "elsewhere" / "b.png")
    path = write_split_file(tmp_path, ["cats/a.png,cat,train", f"{absolute},dog,val", "c.png,1,test"])
    frame = read_split_file(path)
    assert frame.columns.tolist() == ["filename", "class_label", "split"]
    assert frame["filename"].tolist() == [str(tmp_path / "cats" / "a.png"), absolute, str(tmp_path / "c.png")]
    assert frame["class_label"].tolist() == ["cat", "dog", "1"]  # labels stay text
    assert frame["split"].tolist() == ["train", "val", "test"]


@pytest.mark.parametrize(
    "rows, header, message",
    [
        (["a.png,cat"], "filename,label", r"split.csv.* lacks the column\(s\) \['split'\]"),
        (["a.png,cat,train", "a.png,dog,val"], "filename,label,split", "split.csv.* lists the file .*a.png"),
        (["a.png,cat,validation"], "filename,label,split", r"split.csv.* unknown split value\(s\) \['validation'\]"),
        (["a.png,,train"], "filename,label,split", "split.csv.* empty 'class_label' in row 0"),
    ],
    ids=["missing column", "duplicate rows", "unknown split", "empty cell"],
)
def test_read_split_file_errors_name_the_file(tmp_path, rows, header, message):
    path = write_split_file(tmp_path, rows, header)
    with pytest.raises(ValueError, match=message):
        read_split_file(path)


def test_read_split_file_missing_or_empty_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        read_split_file(tmp_path / "absent.csv")
    (tmp_path / "blank.csv").write_text("")
    with pytest.raises(ValueError, match="blank.csv"):
        read_split_file(tmp_path / "blank.csv")


def test_read_real_trashnet_split(shared_dir):
    path = os.path.join(shared_dir, "data", "trashnet", "split.csv")
    if not os.path.isfile(path):
        pytest.skip(f"no TrashNet split file at {path}")
    frame = read_split_file(path)
    assert frame["split"].value_counts().to_dict() == {"train": 1673, "test": 359, "val": 358}
    assert sorted(set(frame["class_label"])) == ["cardboard", "glass", "metal", "paper", "plastic"]
    assert all(os.path.isfile(name) for name in frame["filename"])


def test_stratified_split_keeps_class_proportions_and_is_seeded():
    frame = pd.DataFrame({"filename": [f"{i}.png" for i in range(100)], "class_label": ["a"] * 60 + ["b"] * 40})
    split = stratified_split(frame, val_fraction=0.2, test_fraction=0.1, seed=3)
    counts = split.groupby(["split", "class_label"]).size().to_dict()
    assert counts == {
        ("test", "a"): 6, ("test", "b"): 4, ("train", "a"): 42, ("train", "b"): 28, ("val", "a"): 12, ("val", "b"): 8,
    }
    assert split["filename"].tolist() == frame["filename"].tolist()  # rows keep their order
    assert "split" not in frame.columns  # the input is not modified
    assert split["split"].tolist() == stratified_split(frame, 0.2, 0.1, seed=3)["split"].tolist()
    assert split["split"].tolist() != stratified_split(frame, 0.2, 0.1, seed=4)["split"].tolist()
    assert set(stratified_split(frame, 0.0, 0.0)["split"]) == {"train"}


def test_stratified_split_validates_fractions():
    frame = pd.DataFrame({"filename": ["a", "b", "c", "d"], "class_label": ["x", "y"] * 2})
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(frame, val_fraction=-0.1)
    with pytest.raises(ValueError, match="val_fraction \\+ test_fraction"):
        stratified_split(frame, val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ValueError, match="cannot split 4 rows of 2 classes"):
        stratified_split(frame, val_fraction=0.25, test_fraction=0.25)


def test_load_frame_dispatches_on_what_it_is_given(tmp_path, tiny_image_folder):
    assert len(load_frame(tiny_image_folder)) == 18
    csv = write_split_file(tmp_path, ["a.png,cat,train"])
    assert load_frame(csv)["split"].tolist() == ["train"]
    frame = pd.DataFrame({"filename": ["a.png", "b.png"], "class_label": ["x", "y"]}, index=[7, 3])
    loaded = load_frame(frame)
    assert loaded.index.tolist() == [0, 1] and loaded is not frame
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['class_label'\]"):
        load_frame(pd.DataFrame({"filename": ["a.png"]}))
    with pytest.raises(FileNotFoundError, match="absent"):
        load_frame(tmp_path / "absent")
    with pytest.raises(TypeError, match="Expected data to be a folder, a .csv split file or a DataFrame. "
                                        "Received: data of type int"):
        load_frame(42)


def test_digits_demo_is_offline_rgb_uint8_and_seeded():
    images, labels = digits_demo(size=16, seed=0)
    assert images.shape == (1797, 16, 16, 3) and images.dtype == np.uint8
    assert images.max() == 255 and images.min() == 0
    assert np.array_equal(images[..., 0], images[..., 2])  # gray replicated
    assert sorted(set(labels.tolist())) == list(range(10))
    again, again_labels = digits_demo(size=16, seed=0)
    other, other_labels = digits_demo(size=16, seed=1)
    assert np.array_equal(images, again) and np.array_equal(labels, again_labels)
    assert not np.array_equal(labels, other_labels)
    assert np.bincount(labels).tolist() == np.bincount(other_labels).tolist()


def test_split_sources_keeps_test_images_whatever_the_validation_share(tiny_image_folder):
    small_val = split_sources(tiny_image_folder, val_fraction=0.15, test_fraction=0.2, seed=3)
    large_val = split_sources(tiny_image_folder, val_fraction=0.4, test_fraction=0.2, seed=3)
    assert list(small_val["test"]["filename"]) == list(large_val["test"]["filename"])
    assert len(large_val["val"]) > len(small_val["val"])
    every = pd.concat(small_val.values())
    assert sorted(every["filename"]) == sorted(frame_from_folder(tiny_image_folder)["filename"])


def test_split_sources_of_arrays_and_of_split_data():
    images = np.arange(40, dtype=np.uint8).reshape(40, 1, 1, 1) * np.ones((1, 2, 2, 3), np.uint8)
    parts = split_sources((images, np.arange(40) % 4), val_fraction=0.25, test_fraction=0.25, seed=0)
    assert [len(parts[name][0]) for name in ("train", "val", "test")] == [20, 10, 10]
    assert sorted(np.concatenate([p[0][:, 0, 0, 0] for p in parts.values()]).tolist()) == list(range(40))
    unlabelled = split_sources((images, None), 0.25, 0.25)
    assert unlabelled["train"][1] is None and len(unlabelled["test"][0]) == 10
    assert split_sources(parts)["val"] is parts["val"]
    with pytest.raises(ValueError, match="missing \\['val'\\]"):
        split_sources({"train": parts["train"]})
