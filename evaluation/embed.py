"""Export the pooled embedding of every image, for users' own analyses."""

import os

import numpy as np
import pandas as pd

from data_generators import DataGeneratorClass, atomic_output, load_frame
from evaluation.features import extract_features
from simclr_wrap.backbones import Backbone
from simclr_wrap.callbacks import read_model_metadata

EMBEDDING_SUFFIXES = (".csv", ".npy")


def export_embeddings(data, backbone, out, *, pooling=None, batch_size=64):
    """Write the pooled embedding of every image of `data`, with its file name and label.

    Args:
        data: a folder of class subfolders, a split CSV or a DataFrame.
        backbone: a `Backbone`, or what `Backbone.of` takes (a name, a
            `.keras` path, a model).
        out: a `.csv` file (columns filename, label, split when known, then
            e0, e1, ...) or a `.npy` file (the (N, D) array; the file names
            and labels go to `<out>.index.csv` beside it, row for row).
        pooling: "flatten", "avg" or "max"; None for the pooling a `.keras`
            backbone was adapted with (saved in it by `pretrain`), else "avg".
        batch_size: images per `predict` batch.

    Returns:
        `out`.
    """
    out = os.fspath(out)
    if not out.endswith(EMBEDDING_SUFFIXES):
        raise ValueError(f"--out must end in {' or '.join(EMBEDDING_SUFFIXES)}, got {out!r}")
    if os.path.isdir(out):
        raise IsADirectoryError(f"--out {out!r} is an existing folder, not a file")
    frame = load_frame(data).reset_index(drop=True)
    spec = Backbone.of(backbone)
    base_model, preprocess_input = spec.load()
    if pooling is None:
        saved = read_model_metadata(spec.source) if isinstance(spec.source, str) else None
        pooling = (saved or {}).get("pooling", "avg")
    height, width, channels = base_model.input_shape[1:]
    images = DataGeneratorClass(frame, batch_size=batch_size, width=width, height=height, channels=channels,
                                preprocess_input=preprocess_input)
    embeddings, _ = extract_features(base_model, images, pooling, verbose="auto")  # a progress bar
    index = frame[[c for c in ("filename", "class_label", "split") if c in frame.columns]].rename(
        columns={"class_label": "label"})
    if out.endswith(".npy"):
        with atomic_output(out) as tmp:
            np.save(tmp, embeddings)
        with atomic_output(out + ".index.csv") as tmp:
            index.to_csv(tmp, index=False)
    else:
        table = pd.concat([index, pd.DataFrame(embeddings, columns=[f"e{i}" for i in range(embeddings.shape[1])])], axis=1)
        with atomic_output(out) as tmp:
            table.to_csv(tmp, index=False)
    return out
