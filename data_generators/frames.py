"""Tables of image files: one row per image, with `filename` and `class_label`.

Every data source (a folder of class subfolders, a split file, a user's
DataFrame) becomes the same DataFrame, so the generators read one thing.
"""

import logging
import os

import cv2
import numpy as np
import pandas as pd

from data_generators.checks import check_integer, check_number

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val", "test")
_FRAME_COLUMNS = ("filename", "class_label")
_SPLIT_FILE_COLUMNS = ("filename", "label", "split")


def frame_from_folder(root, extensions=IMAGE_EXTENSIONS):
    """List the images of a folder that holds one subfolder per class.

    Hidden files and folders (names starting with ".") are skipped, and so
    are files directly in `root`; class folders are not searched recursively.

    Args:
        root: the folder; each subfolder's name is the class label of the
            images in it.
        extensions: the file endings, compared case-insensitively, that
            count as images.

    Returns:
        A DataFrame with columns `filename` (absolute paths) and `class_label`,
        sorted by class label, then file name.

    Raises:
        FileNotFoundError: `root` does not exist.
        NotADirectoryError: `root` is a file.
        ValueError: no images at all, or a class folder without images.

    Example:
    >>> import cv2, numpy as np, os, tempfile
    >>> root = tempfile.mkdtemp()
    >>> os.makedirs(os.path.join(root, "cat"))
    >>> _ = cv2.imwrite(os.path.join(root, "cat", "a.png"), np.zeros((4, 4), np.uint8))
    >>> frame_from_folder(root)["class_label"].tolist()
    ['cat']
    """
    root = os.path.abspath(os.fspath(root))
    if not os.path.exists(root):
        raise FileNotFoundError(f"image folder {root!r} does not exist")
    if not os.path.isdir(root):
        raise NotADirectoryError(f"image folder {root!r} is a file, not a folder")
    extensions = tuple(extension.lower() for extension in extensions)
    class_folders = sorted(
        name for name in os.listdir(root) if not name.startswith(".") and os.path.isdir(os.path.join(root, name))
    )
    files_per_class = {
        class_label: sorted(
            name
            for name in os.listdir(os.path.join(root, class_label))
            if not name.startswith(".")
            and name.lower().endswith(extensions)
            and os.path.isfile(os.path.join(root, class_label, name))
        )
        for class_label in class_folders
    }
    if not any(files_per_class.values()):
        raise ValueError(
            f"no images found in {root!r}: expected one subfolder per class holding files ending in {extensions}"
        )
    empty = [class_label for class_label, names in files_per_class.items() if not names]
    if empty:
        raise ValueError(
            f"class folder {os.path.join(root, empty[0])!r} has no images ending in {extensions}"
            f" ({len(empty)} of {len(class_folders)} class folders are empty)"
        )
    rows = [
        (os.path.join(root, class_label, name), class_label)
        for class_label, names in files_per_class.items()
        for name in names
    ]
    logger.info("found %d images of %d classes in %s", len(rows), len(class_folders), root)
    return pd.DataFrame(rows, columns=list(_FRAME_COLUMNS))


def read_split_file(path):
    """Read a CSV of `filename,label,split` rows into a frame.

    Args:
        path: the CSV file. Relative file names in it are relative to the
            CSV's own folder.

    Returns:
        A DataFrame with columns `filename` (absolute), `class_label` and
        `split` (one of "train", "val", "test"), in the file's row order.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the file lacks a column, has an empty cell, repeats a
            file name or names an unknown split.

    Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "split.csv")
    >>> _ = open(path, "w").write("filename,label,split\\ncat/a.png,cat,train\\n")
    >>> read_split_file(path)["split"].tolist()
    ['train']
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"split file {path!r} does not exist")
    try:
        # Everything as text: labels such as "1" or "NA" stay labels.
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ValueError(f"could not read split file {path!r} as CSV: {error}") from None
    _check_columns(table, _SPLIT_FILE_COLUMNS, f"split file {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    frame = pd.DataFrame(
        {
            "filename": [os.path.normpath(os.path.join(folder, name)) for name in table["filename"]],
            "class_label": table["label"],
            "split": table["split"],
        }
    )
    _check_rows(frame, f"split file {path!r}")
    return frame


def stratified_split(frame, val_fraction=0.15, test_fraction=0.15, seed=0):
    """Assign each row to "train", "val" or "test", stratified by class.

    Two seeded `sklearn.model_selection.train_test_split` calls: the test
    rows first, then the validation rows from what is left, so each split
    keeps the class proportions of the whole.

    Args:
        frame: a DataFrame with a `class_label` column.
        val_fraction: share of all rows for validation, in [0, 1).
        test_fraction: share of all rows for testing, in [0, 1).
        seed: integer seed of the split.

    Returns:
        A copy of `frame` with a `split` column (replaced if present).

    Example:
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"filename": [f"{i}.png" for i in range(20)],
    ...                       "class_label": ["a", "b"] * 10})
    >>> sorted(stratified_split(frame, 0.2, 0.2)["split"].value_counts().items())
    [('test', 4), ('train', 12), ('val', 4)]
    """
    # Imported here: scikit-learn takes a second to import, and most users of
    # this module never split.
    from sklearn.model_selection import train_test_split

    val_fraction = check_number("val_fraction", val_fraction, minimum=0.0)
    test_fraction = check_number("test_fraction", test_fraction, minimum=0.0)
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            "Expected val_fraction + test_fraction to be < 1 (to leave training rows). "
            f"Received: val_fraction={val_fraction}, test_fraction={test_fraction}"
        )
    seed = check_integer("seed", seed, minimum=0)
    _check_columns(frame, ("class_label",), "frame")
    split = np.full(len(frame), "train", dtype=object)
    rows = np.arange(len(frame))
    labels = frame["class_label"].to_numpy()
    try:
        if test_fraction > 0:
            rows, test_rows = train_test_split(rows, test_size=test_fraction, stratify=labels[rows], random_state=seed)
            split[test_rows] = "test"
        if val_fraction > 0:
            share_of_rest = val_fraction / (1.0 - test_fraction)
            rows, val_rows = train_test_split(rows, test_size=share_of_rest, stratify=labels[rows], random_state=seed)
            split[val_rows] = "val"
    except ValueError as error:
        raise ValueError(
            f"cannot split {len(frame)} rows of {len(set(labels))} classes with val_fraction={val_fraction},"
            f" test_fraction={test_fraction}: {error}"
        ) from None
    result = frame.copy()
    result["split"] = split
    return result


def split_sources(data, val_fraction=0.15, test_fraction=0.15, seed=0):
    """Split any data source into its "train", "val" and "test" parts.

    A `filename,label,split` CSV or a frame with a `split` column keeps its
    split; anything else is split here by `stratified_split`, so the same
    seed always gives the same parts (pretraining and benchmarking one data
    set with one seed never let SimCLR see the test images).

    Args:
        data: a folder, a split CSV, a DataFrame, an `(images, labels)` pair
            of arrays (labels may be None: the split is then not
            stratified), or a dict that is already split.
        val_fraction: share of all images for validation, when splitting.
        test_fraction: share of all images for testing, when splitting.
        seed: integer seed of the split.

    Returns:
        A dict from "train", "val" and "test" to DataFrames or
        `(images, labels)` pairs (a part may be empty when its share is 0).

    Example:
    >>> import numpy as np
    >>> parts = split_sources((np.zeros((20, 4, 4, 3), np.uint8), np.arange(20) % 2), 0.2, 0.2)
    >>> {name: len(images) for name, (images, labels) in parts.items()}
    {'train': 12, 'val': 4, 'test': 4}
    """
    if isinstance(data, dict):
        missing = [name for name in SPLITS[:2] if name not in data]
        if missing:
            raise ValueError(
                f"Expected split data to have the parts {list(SPLITS)} ('test' may be left out). "
                f"Received: a dict missing {missing}"
            )
        return {name: data.get(name) for name in SPLITS}
    if isinstance(data, tuple):
        images, labels = data
        stratify_by = np.zeros(len(images), int) if labels is None else np.asarray(labels)
        split = stratified_split(pd.DataFrame({"class_label": stratify_by}), val_fraction, test_fraction, seed)["split"]
        return {
            name: (images[mask], None if labels is None else np.asarray(labels)[mask])
            for name in SPLITS
            for mask in [split.to_numpy() == name]
        }
    frame = load_frame(data)
    if "split" not in frame.columns:
        frame = stratified_split(frame, val_fraction, test_fraction, seed)
    return {name: frame[frame["split"] == name] for name in SPLITS}


def load_frame(data):
    """Turn a folder, a split CSV or a DataFrame into a checked frame.

    Args:
        data: a folder of class subfolders (read by `frame_from_folder`), a
            `.csv` split file (read by `read_split_file`), or a DataFrame
            with columns `filename` and `class_label` (and optionally
            `split`).

    Returns:
        A new DataFrame with a fresh 0..N-1 index.

    Example:
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"filename": ["a.png"], "class_label": ["cat"]})
    >>> load_frame(frame).columns.tolist()
    ['filename', 'class_label']
    """
    if isinstance(data, pd.DataFrame):
        _check_columns(data, _FRAME_COLUMNS, "data frame")
        frame = data.reset_index(drop=True)
        _check_rows(frame, "data frame")
        return frame
    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        if os.path.isdir(path):
            return frame_from_folder(path)
        if path.lower().endswith(".csv"):
            return read_split_file(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"data {path!r} does not exist")
        raise ValueError(f"data {path!r} is neither a folder of class subfolders nor a .csv split file")
    raise TypeError(
        f"Expected data to be a folder, a .csv split file or a DataFrame. Received: data of type {type(data).__name__}"
    )


def digits_demo(size=32, seed=0):
    """Scikit-learn's bundled handwritten digits as small RGB images.

    Needs no download, so demos and smoke tests run offline. The 1,797
    8x8 images (values 0..16) are scaled to 0..255, resized with bilinear
    interpolation and replicated to three channels.

    Args:
        size: output side in pixels.
        seed: integer seed of the order in which the images are returned.

    Returns:
        `(images, labels)`: uint8 array (1797, size, size, 3) and int64
        array (1797,) of digits 0..9.

    Example:
    >>> images, labels = digits_demo(size=16)
    >>> images.shape, sorted(set(labels.tolist())) == list(range(10))
    ((1797, 16, 16, 3), True)
    """
    from sklearn.datasets import load_digits

    size = check_integer("size", size, minimum=1)
    seed = check_integer("seed", seed, minimum=0)
    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.images))
    small = (digits.images[order] * (255.0 / 16.0)).astype(np.float32)
    images = np.empty((len(small), size, size, 3), np.uint8)
    for position, digit in enumerate(small):
        resized = cv2.resize(digit, (size, size), interpolation=cv2.INTER_LINEAR)
        images[position] = np.clip(np.round(resized), 0, 255)[:, :, None]
    return images, digits.target[order].astype(np.int64)


def _check_columns(frame, required, source):
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise ValueError(f"{source} lacks the column(s) {missing}; it has {list(frame.columns)}")


def _check_rows(frame, source):
    """Empty cells, repeated file names and unknown splits, named with `source`."""
    for column in ("filename", "class_label", "split"):
        if column not in frame.columns:
            continue
        empty = frame[column].isna() | (frame[column].astype(str).str.strip() == "")
        if empty.any():
            raise ValueError(f"{source} has an empty {column!r} in row {int(np.flatnonzero(empty)[0])}")
    repeated = frame["filename"][frame["filename"].duplicated()]
    if len(repeated):
        raise ValueError(
            f"{source} lists the file {repeated.iloc[0]!r} more than once ({len(repeated)} duplicate rows)"
        )
    if "split" in frame.columns:
        unknown = sorted(set(frame["split"]) - set(SPLITS))
        if unknown:
            raise ValueError(f"{source} has unknown split value(s) {unknown}; allowed: {list(SPLITS)}")


def take_rows(data, indices):
    """The images (and labels) of a frame or an `(images, labels)` pair at `indices`.

    Args:
        data: a DataFrame or an `(images, labels)` pair of arrays (labels
            may be None).
        indices: positions, as for `numpy.take`.

    Returns:
        The same kind of data, holding only those rows, in that order.

    Example:
    >>> import numpy as np
    >>> images, labels = take_rows((np.zeros((5, 2, 2, 3)), np.arange(5)), [4, 0])
    >>> images.shape, labels.tolist()
    ((2, 2, 2, 3), [4, 0])
    """
    if isinstance(data, tuple):
        images, labels = data
        return np.asarray(images)[indices], None if labels is None else np.asarray(labels)[indices]
    return data.iloc[indices]
