"""One SimCLR epoch of the real shared MobileNetV2 on TrashNet (needs ../shared)."""

import json
import os

import numpy as np

from evaluation.pretraining import pretrain
from simclr_wrap.backbones import Backbone


def test_one_epoch_of_shared_mobilenet_v2_on_trashnet(shared_dir, tmp_path):
    weights = os.path.join(shared_dir, "backbones", "mobilenet_v2_nsfwjs_notop.weights.h5")
    split_file = os.path.join(shared_dir, "data", "trashnet", "split.csv")
    backbone = Backbone("mobilenet_v2", input_shape=(80, 80, 3), weights=weights, preprocess="unit")
    simclr = pretrain(
        split_file, backbone, tmp_path, schedule=[(1, 1e-4, 1)],
        simclr=dict(batch_size=32, feat_dims_ph=(256, 64), pooling="avg"), verbose=0,
    )
    history = simclr.history_
    assert np.isfinite(history["nt_xent"] + history["val_nt_xent"]).all()
    # the pretrained features already tell views of one image from the rest: far above chance (1/63)
    assert history["val_contrastive_accuracy"][0] > 0.1
    assert (tmp_path / "base_model.keras").exists()
    config = json.loads((tmp_path / "pretrain_config.json").read_text())
    assert config["backbone"]["weights"] == weights and config["backbone"]["input_shape"] == [80, 80, 3]
