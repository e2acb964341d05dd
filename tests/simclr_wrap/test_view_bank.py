"""The view bank: the frozen prefix's activations of M views per image, computed once per round."""

import json
import logging
import os

import keras
import numpy as np
import pytest

import simclr_wrap.model
from data_generators import DataGeneratorSimCLR, frame_from_folder
from simclr_wrap import SimCLR
from simclr_wrap.view_bank import BankBatches, ViewBank, bank_plan, fill_bank
from tests.conftest import TINY_SIZE, make_tiny_backbone, write_image_folder


@pytest.fixture(scope="module")
def frame(tmp_path_factory):
    return frame_from_folder(write_image_folder(tmp_path_factory.mktemp("bank") / "images", n_per_class=8))


def generators(frame, **options):
    options = dict(batch_size=4, width=TINY_SIZE, height=TINY_SIZE, seed=0, **options)
    return DataGeneratorSimCLR(frame, subset="train", **options), DataGeneratorSimCLR(frame, subset="val", **options)


def trained(frame, view_bank, schedule, save_path=None, callbacks=None, resume=False, backbone=make_tiny_backbone,
            **options):
    keras.utils.set_random_seed(0)
    train, val = generators(frame)
    simclr = SimCLR(backbone(), 4, feat_dims_ph=(16, 8), save_path=save_path, seed=0,
                    early_stopping_patience=10, view_bank=view_bank, **options)
    simclr.train_schedule(train, val, schedule, callbacks=callbacks, verbose=0, resume=resume)
    return simclr


def identity_bank(data, views_per_image, first_epoch=0, **options):
    """A bank whose 'prefix' is the identity: its activations are the views themselves."""
    inputs = [keras.Input((TINY_SIZE, TINY_SIZE, 3)), keras.Input((TINY_SIZE, TINY_SIZE, 3))]
    encoder = keras.Model(inputs, keras.layers.Concatenate(axis=0)(inputs))
    return fill_bank(encoder, data, first_epoch, views_per_image, **options)


def test_its_first_epochs_train_as_the_round_without_a_bank_and_later_ones_on_new_pairs(frame):
    schedule = [("conv2", 1e-3, 3)]  # conv1 stays frozen: the prefix
    end_to_end, banked = trained(frame, None, schedule), trained(frame, 4, schedule)
    for key in ("nt_xent", "val_nt_xent"):
        # Epochs 1 and 2 replay the bank's views: the same batches, up to float16 activations.
        np.testing.assert_allclose(banked.history_[key][:2], end_to_end.history_[key][:2], rtol=1e-3)
    # Epoch 3 draws new pairs of the stored views: another training loss than the generator's views give.
    assert abs(banked.history_["nt_xent"][2] - end_to_end.history_["nt_xent"][2]) > 1e-2
    # The bank trained the SimCLR model's own layers: its projector's weights moved like the end-to-end ones.
    keras.utils.set_random_seed(0)
    untrained = SimCLR(make_tiny_backbone(), 4, feat_dims_ph=(16, 8), save_path=None, seed=0)
    moved = [np.abs(a - b).max() for a, b in zip(banked.SimCLR_model.get_weights(), untrained.SimCLR_model.get_weights())]
    assert max(moved) > 1e-3


def residual_backbone():
    """conv1, then a residual block: its branch (conv2, conv3) and the sum after it both read conv1's output."""
    inputs = keras.Input((TINY_SIZE, TINY_SIZE, 3), name="image")
    first = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inputs)
    second = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv2")(first)
    joined = keras.layers.Add(name="add")([first, keras.layers.Conv2D(4, 3, padding="same", name="conv3")(second)])
    return keras.Model(inputs, keras.layers.MaxPooling2D(name="pool")(joined), name="residual_backbone")


def test_a_round_that_trains_a_whole_residual_block_uses_the_bank_and_one_inside_it_cannot(frame, caplog):
    schedule = [("conv2", 1e-3, 3)]  # the prefix ends with conv1, whose output feeds conv2 and the sum
    with caplog.at_level(logging.INFO, logger="simclr_wrap.model"):
        banked = trained(frame, 4, schedule, backbone=residual_backbone)
    assert "a view bank of 4 views per image through the first 2 layers of 'residual_backbone'" in caplog.text
    end_to_end = trained(frame, None, schedule, backbone=residual_backbone)
    for key in ("nt_xent", "val_nt_xent"):
        # The replayed epochs, up to float16 activations (no BatchNormalization here rescales them).
        np.testing.assert_allclose(banked.history_[key][:2], end_to_end.history_[key][:2], rtol=5e-3)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="simclr_wrap.model"):
        trained(frame, 4, [("conv3", 1e-3, 3)], backbone=residual_backbone)  # conv1's and conv2's outputs cross
    assert "trains end to end, without a view bank: no frozen layer with weights comes before layer 'conv3'" in (
        caplog.text)


def test_replayed_epochs_are_the_generators_batches_and_later_pairs_are_two_views_of_one_image(frame):
    train, _ = generators(frame)
    bank = identity_bank(train, views_per_image=4, first_epoch=7)
    batches = BankBatches(bank, 4, train.seed, first_epoch=7, n_batches=len(train))
    for epoch in (7, 8):  # stored: exactly what the generator gives at those epochs
        batches.epoch = train.epoch = epoch
        for index in range(len(train)):
            (a, b), target = batches[index]
            (view_a, view_b), expected = train[index]
            np.testing.assert_allclose(a, view_a, atol=0.13)  # float16 of values up to 255
            np.testing.assert_allclose(b, view_b, atol=0.13)
            np.testing.assert_array_equal(target, expected)
    stored = bank.activations.astype(np.float32)
    batches.epoch = 9
    seen, slots_seen = [], set()
    for index in range(len(batches)):
        (a, b), _ = batches[index]
        for view_a, view_b in zip(a, b):
            # Independent of BankBatches' bookkeeping: find each view among all stored ones.
            image_a, slot_a = np.argwhere((stored == view_a).all(axis=(2, 3, 4)) & bank.filled)[0]
            image_b, slot_b = np.argwhere((stored == view_b).all(axis=(2, 3, 4)) & bank.filled)[0]
            assert image_a == image_b and slot_a != slot_b
            seen.append(image_a)
            slots_seen.add((slot_a, slot_b))
    assert len(seen) == len(set(seen)) == len(train) * 4  # each image at most once per epoch
    assert len(slots_seen) > 4  # pairs across the stored epochs, not only the replayed ones
    first = [batches[0][0][0].copy() for _ in range(2)]
    np.testing.assert_array_equal(*first)  # seeded by (seed, epoch, batch): the same every time it is read
    batches.epoch = 10
    assert not np.array_equal(batches[0][0][0], first[0])


def test_validation_batches_replay_its_one_epoch_of_views(frame):
    _, val = generators(frame)
    batches = BankBatches(identity_bank(val, 2), 4, val.seed, first_epoch=0, n_batches=len(val), replay_only=True)
    batches.on_epoch_end()
    batches.on_epoch_end()
    np.testing.assert_allclose(batches[0][0][1], val[0][0][1], atol=0.13)


def test_a_bank_beyond_its_memory_budget_is_a_memory_mapped_file_removed_afterwards(frame, tmp_path):
    train, _ = generators(frame)
    in_memory = identity_bank(train, 2)
    mapped = identity_bank(train, 2, folder=str(tmp_path), max_bytes=1000)
    assert mapped.memory_mapped and not in_memory.memory_mapped
    assert len(os.listdir(tmp_path)) == 1
    np.testing.assert_array_equal(np.asarray(mapped.activations), in_memory.activations)
    mapped.close()
    assert os.listdir(tmp_path) == []


def test_activations_beyond_float16_are_clipped_to_its_range_not_made_infinite(caplog):
    bank = ViewBank(2, 2, (1,), dtype="float16")
    with caplog.at_level(logging.WARNING, logger="simclr_wrap.view_bank"):
        bank.put(0, 0, np.array([0, 1]), np.array([[1e6], [1.0]]), np.array([[2.0], [3.0]]))
    assert bank.activations[0, 0, 0] == np.finfo(np.float16).max
    assert "clipped" in caplog.text


def test_each_round_fills_its_own_bank_from_the_weights_it_starts_with(frame, monkeypatch):
    """A bank is never reused: round 2's prefix holds conv2 and bn2, trained in round 1, and its bank shows it."""
    filled = []

    def recording(encoder, data, first_epoch, views_per_image, *args, **kwargs):
        bank = fill_bank(encoder, data, first_epoch, views_per_image, *args, **kwargs)
        if data.subset == "train":
            saved, data.epoch = data.epoch, first_epoch
            (view_a, _), _ = data[0]
            data.epoch = saved
            filled.append((np.array(bank.activations[bank.batch_rows[0][0], 0], np.float32), view_a))
        return bank

    monkeypatch.setattr(simclr_wrap.model, "fill_bank", recording)
    simclr = trained(frame, 2, [("conv2", 1e-3, 3), ("relu2", 1e-3, 3)], unfreeze_batchnorm=True)
    assert len(filled) == 2
    stored, view_a = filled[1]  # round 2 trains the head only: its prefix is the whole backbone
    adapted = keras.ops.convert_to_numpy(simclr.base_model(view_a, training=False))
    np.testing.assert_allclose(stored, adapted, rtol=2e-3, atol=2e-3)
    keras.utils.set_random_seed(0)
    before_round_1 = keras.ops.convert_to_numpy(make_tiny_backbone()(view_a, training=False))
    assert np.abs(before_round_1 - stored).max() > 10 * np.abs(adapted - stored).max() + 1e-2


def test_a_round_it_cannot_serve_trains_end_to_end_and_says_why(frame, caplog):
    with caplog.at_level(logging.INFO, logger="simclr_wrap.model"):
        trained(frame, 4, [("conv1", 1e-3, 3), ("conv2", 1e-3, 2)])
    messages = [record.getMessage() for record in caplog.records if "without a view bank" in record.getMessage()]
    assert len(messages) == 2
    assert "no frozen layer with weights comes before layer 'conv1' of 'tiny_backbone'" in messages[0]
    assert "the round has 2 epochs, no more than the 2 epochs of views" in messages[1]


def test_a_random_layer_in_the_prefix_or_data_of_unknown_images_rule_the_bank_out():
    inputs = keras.Input((8,))
    x = keras.layers.Dense(4, name="frozen")(inputs)
    x = keras.layers.Dropout(0.5, name="dropout")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="trains")(x), name="functional_dropout")
    model.get_layer("frozen").trainable = False
    assert "the frozen layers ['dropout'] of 'functional_dropout' are random" in bank_plan(model, 2, 3, None, None)[1]
    assert "does not say which images each batch holds" in bank_plan(model, 2, 3, [1, 2], None)[1]
    assert "several workers" in bank_plan(model, 2, 3, None, None, multi_worker=True)[1]


def test_checkpoints_and_resume_state_are_the_whole_simclr_model(frame, tmp_path):
    from tests.simclr_wrap.test_resume import InterruptAt, Interrupted

    schedule = [("conv2", 1e-3, 4)]
    whole = trained(frame, 2, schedule, save_path=tmp_path / "whole", resume=True)
    best = keras.models.load_model(tmp_path / "whole" / "simclr_best.keras")
    assert [tensor.name for tensor in best.inputs] == ["view_a", "view_b"]
    with pytest.raises(Interrupted):
        trained(frame, 2, schedule, save_path=tmp_path / "resumed", resume=True, callbacks=[InterruptAt(3)])
    state = json.loads((tmp_path / "resumed" / "resume" / "state.json").read_text())
    assert state["epochs_in_round"] == 2
    resumed = trained(frame, 2, schedule, save_path=tmp_path / "resumed", resume=True)
    # The resumed round builds the same bank (the round's first views) and draws the same pairs.
    np.testing.assert_allclose(resumed.history_["nt_xent"], whole.history_["nt_xent"], rtol=1e-4)
    for a, b in zip(resumed.SimCLR_model.get_weights(), whole.SimCLR_model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_view_bank_is_an_option_of_the_config():
    simclr = SimCLR(make_tiny_backbone(), 4, feat_dims_ph=(8,), save_path=None, view_bank=6)
    assert simclr.get_config()["view_bank"] == 6 and SimCLR.default_config()["view_bank"] is None
    with pytest.raises(ValueError, match="even number of views per image.*Received: view_bank=3"):
        SimCLR(make_tiny_backbone(), 4, feat_dims_ph=(8,), save_path=None, view_bank=3)
    with pytest.raises(ValueError, match="view_bank"):
        SimCLR(make_tiny_backbone(), 4, feat_dims_ph=(8,), save_path=None, view_bank=0)
