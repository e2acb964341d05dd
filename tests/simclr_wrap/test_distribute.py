"""SimCLR under `tf.distribute.MirroredStrategy` on two logical CPU devices.

The CPU is split into two devices, which must happen before TensorFlow
starts, so the measurements run in one child process (`measure`) and the
tests check what it reports: the loss, the gradients, NNCLR's queue and
synchronised BatchNormalization under the strategy against one device on
the same global batch.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from data_generators.targets import contrastive_target
from simclr_wrap import SimCLR
from simclr_wrap.distribute import gather_replicas
from simclr_wrap.losses import NTXent, contrastive_metrics
from tests.conftest import FLOAT32_IN_SUBPROCESS, TINY_SIZE, make_tiny_backbone, write_image_folder

GLOBAL_BATCH = 8


def _wrapper(strategy, weights=None, **options):
    """A SimCLR of the tiny backbone, every layer training, built under `strategy` (None: one device)."""
    import tensorflow as tf

    with (strategy or tf.distribute.get_strategy()).scope():
        keras.utils.set_random_seed(0)
        backbone = make_tiny_backbone()
    options = {"temperature": 0.5, "pooling": "avg", "save_path": None, **options}
    simclr = SimCLR(backbone, GLOBAL_BATCH, feat_dims_ph=(16, 8), num_of_unfrozen_layers=len(backbone.layers),
                    seed=0, strategy=strategy, **options)
    if weights is not None:
        simclr.SimCLR_model.set_weights(weights)
    return simclr


def _one_sgd_step(simclr, views, target, batch_size=GLOBAL_BATCH):
    """Train one step with plain SGD (its update is the gradient itself); return the logged NT-Xent."""
    import tensorflow as tf

    with (simclr.strategy or tf.distribute.get_strategy()).scope():
        simclr.SimCLR_model.compile(optimizer=keras.optimizers.SGD(1.0), loss=NTXent(), metrics=contrastive_metrics())
    history = simclr.SimCLR_model.fit(list(views), target, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return history.history["nt_xent"][0]


def _largest_difference(first, second):
    return max(float(np.max(np.abs(a - b))) for a, b in zip(first, second))


def measure(image_folder):
    """Everything the tests check, measured in a process whose CPU is two logical devices."""
    import tensorflow as tf

    from data_generators import DataGeneratorSimCLR, frame_from_folder

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(0)
    views = tuple(rng.uniform(0, 1, (GLOBAL_BATCH, TINY_SIZE, TINY_SIZE, 3)).astype("float32") for _ in range(2))
    target = contrastive_target(GLOBAL_BATCH)
    report = {"replicas": strategy.num_replicas_in_sync}

    def evaluate(simclr, batch_size=GLOBAL_BATCH):
        batches = GLOBAL_BATCH // batch_size
        targets = np.concatenate([contrastive_target(batch_size)] * batches)
        return simclr.SimCLR_model.evaluate(list(views), targets, batch_size=batch_size, verbose=0, return_dict=True)

    single = _wrapper(None)
    weights = single.SimCLR_model.get_weights()
    mirrored = _wrapper(strategy, weights)
    report["nt_xent_single"] = evaluate(single)["nt_xent"]
    report["nt_xent_mirrored"] = evaluate(mirrored)["nt_xent"]
    # What per-replica negatives would give: each half of the batch on its own.
    report["nt_xent_per_replica_negatives"] = evaluate(single, GLOBAL_BATCH // 2)["nt_xent"]

    report["step_nt_xent_single"] = _one_sgd_step(single, views, target)
    report["step_nt_xent_mirrored"] = _one_sgd_step(mirrored, views, target)
    report["weights_after_step_difference"] = _largest_difference(
        single.SimCLR_model.get_weights(), mirrored.SimCLR_model.get_weights())
    report["weights_changed_by_step"] = _largest_difference(weights, single.SimCLR_model.get_weights())

    nnclr = {"positives": "nearest_neighbour", "queue_size": 4 * GLOBAL_BATCH}
    single = _wrapper(None, **nnclr)
    weights = single.SimCLR_model.get_weights()
    mirrored = _wrapper(strategy, weights, **nnclr)
    report["nnclr_step_nt_xent_single"] = _one_sgd_step(single, views, target)
    report["nnclr_step_nt_xent_mirrored"] = _one_sgd_step(mirrored, views, target)
    queues = [simclr.SimCLR_model.get_layer("support_queue").queue.numpy() for simclr in (single, mirrored)]
    report["nnclr_queue_difference"] = float(np.max(np.abs(queues[0] - queues[1])))
    report["nnclr_weights_after_step_difference"] = _largest_difference(
        single.SimCLR_model.get_weights(), mirrored.SimCLR_model.get_weights())

    for sync in (True, False):
        batchnorm = {"unfreeze_batchnorm": True, "sync_batchnorm": sync}
        single = _wrapper(None, unfreeze_batchnorm=True)
        mirrored = _wrapper(strategy, single.SimCLR_model.get_weights(), **batchnorm)
        report[f"batchnorm_sync_{sync}_step_nt_xent_single"] = _one_sgd_step(single, views, target)
        report[f"batchnorm_sync_{sync}_step_nt_xent_mirrored"] = _one_sgd_step(mirrored, views, target)

    frame = frame_from_folder(image_folder)
    data = DataGeneratorSimCLR(frame, batch_size=GLOBAL_BATCH, width=TINY_SIZE,
                               height=TINY_SIZE, seed=0)
    history = _wrapper(strategy).train(data, epochs=1, verbose=0)
    report["epoch_nt_xent"] = history.history["nt_xent"]

    with strategy.scope():
        inside = make_tiny_backbone(name="inside")
    outside = make_tiny_backbone(name="outside")
    for name, call in {
        "outside_scope": lambda: SimCLR(outside, GLOBAL_BATCH, save_path=None, strategy=strategy),
        "odd_batch": lambda: SimCLR(inside, 5, save_path=None, strategy=strategy),
    }.items():
        try:
            call()
            report[f"error_{name}"] = None
        except ValueError as error:
            report[f"error_{name}"] = str(error)
    return report


@pytest.fixture(scope="module")
def mirrored_report(tmp_path_factory):
    folder = write_image_folder(tmp_path_factory.mktemp("distribute") / "images", n_per_class=6)
    script = textwrap.dedent(f"""
        import json, sys
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        sys.path.insert(0, {os.getcwd()!r})
        {FLOAT32_IN_SUBPROCESS}
        from tests.simclr_wrap.test_distribute import measure
        print("REPORT " + json.dumps(measure({folder!r})))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    lines = [line for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, result.stderr[-4000:]
    return json.loads(lines[-1][len("REPORT "):])


def test_two_replicas_run(mirrored_report):
    assert mirrored_report["replicas"] == 2


def test_loss_under_the_strategy_is_the_single_device_loss_on_the_global_batch(mirrored_report):
    assert mirrored_report["nt_xent_mirrored"] == pytest.approx(mirrored_report["nt_xent_single"], abs=1e-5)


def test_negatives_come_from_both_replicas(mirrored_report):
    # Per-replica negatives give each anchor fewer candidates, hence a clearly different loss.
    assert abs(mirrored_report["nt_xent_per_replica_negatives"] - mirrored_report["nt_xent_single"]) > 1e-2


def test_one_training_step_updates_the_weights_as_on_one_device(mirrored_report):
    assert mirrored_report["step_nt_xent_mirrored"] == pytest.approx(mirrored_report["step_nt_xent_single"], abs=1e-5)
    assert mirrored_report["weights_changed_by_step"] > 1e-3  # the step did something to compare
    assert mirrored_report["weights_after_step_difference"] < 1e-5


def test_nnclr_under_the_strategy_enqueues_the_global_batch(mirrored_report):
    assert mirrored_report["nnclr_step_nt_xent_mirrored"] == pytest.approx(
        mirrored_report["nnclr_step_nt_xent_single"], abs=1e-5)
    assert mirrored_report["nnclr_queue_difference"] < 1e-6
    assert mirrored_report["nnclr_weights_after_step_difference"] < 1e-5


def test_synchronised_batchnorm_uses_the_global_batch_statistics(mirrored_report):
    report = mirrored_report
    assert report["batchnorm_sync_True_step_nt_xent_mirrored"] == pytest.approx(
        report["batchnorm_sync_True_step_nt_xent_single"], abs=1e-5)
    # Without synchronisation each replica normalises its half of the views by its own statistics.
    assert abs(report["batchnorm_sync_False_step_nt_xent_mirrored"] - report["batchnorm_sync_False_step_nt_xent_single"]) > 1e-4


def test_an_epoch_of_generator_data_trains_under_the_strategy(mirrored_report):
    assert len(mirrored_report["epoch_nt_xent"]) == 1
    assert np.isfinite(mirrored_report["epoch_nt_xent"][0])


def test_a_backbone_built_outside_the_scope_is_refused(mirrored_report):
    assert "outside the scope" in mirrored_report["error_outside_scope"]
    assert "strategy.scope()" in mirrored_report["error_outside_scope"]


def test_a_global_batch_that_does_not_split_over_the_replicas_is_refused(mirrored_report):
    assert "batch_size=5" in mirrored_report["error_odd_batch"]
    assert "multiple of 2" in mirrored_report["error_odd_batch"]


def test_one_device_gathers_nothing():
    rows = np.arange(6, dtype="float32").reshape(3, 2)
    gathered, first_row = gather_replicas(rows)
    assert first_row == 0
    np.testing.assert_array_equal(np.asarray(gathered), rows)


def test_sync_batchnorm_sets_keras_synchronized_batchnorm():
    backbone = make_tiny_backbone()
    SimCLR(backbone, 4, feat_dims_ph=(8,), save_path=None, unfreeze_batchnorm=True, sync_batchnorm=True)
    assert backbone.get_layer("bn2").synchronized



# --- Several workers: MultiWorkerMirroredStrategy, two processes on loopback, one CPU device each ---

MULTI_WORKER_OPTIONS = {"lr": 1e-2}  # steps large enough for a difference between the runs to show
MULTI_WORKER_EPOCHS = 2


class _BatchLogs(keras.callbacks.Callback):
    """Keeps the logs after every training batch (the first: the loss of the first step)."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append(dict(logs or {}))


class _DieAt(keras.callbacks.Callback):
    """Kills this process, as a machine failing would, after batch `batch` of epoch `epoch` of round `round`."""

    def __init__(self, round, epoch, batch):
        super().__init__()
        self.at, self._round, self._epoch = (round, epoch, batch), 0, None

    def on_train_begin(self, logs=None):
        self._round += 1

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self._round, self._epoch, batch) == self.at:
            os._exit(17)


def _image_data(image_folder, subset="train"):
    """The folder's images as the `subset` split (validation data keeps its views from epoch to epoch)."""
    from data_generators import DataGeneratorSimCLR, frame_from_folder

    return DataGeneratorSimCLR(frame_from_folder(image_folder).assign(split=subset), subset=subset,
                               batch_size=GLOBAL_BATCH, width=TINY_SIZE, height=TINY_SIZE, seed=0)


def _train_twice(strategy, image_folder, **options):
    """Train the same SimCLR on one device and under `strategy`; return both wrappers and their batch logs."""
    runs = []
    for under in (None, strategy):
        simclr = _wrapper(under, **MULTI_WORKER_OPTIONS, **options)
        logs = _BatchLogs()
        simclr.train(_image_data(image_folder), _image_data(image_folder, "val"), epochs=MULTI_WORKER_EPOCHS,
                     callbacks=[logs], verbose=0)
        runs.append((simclr, logs.batches))
    return runs


def measure_one_worker(image_folder):
    """What the multi-worker tests check, as one worker of `MultiWorkerMirroredStrategy` (TF_CONFIG set)."""
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    (single, single_logs), (distributed, distributed_logs) = _train_twice(strategy, image_folder)
    report = {"replicas": strategy.num_replicas_in_sync, "steps": len(distributed_logs)}
    report["first_step_nt_xent_single"] = single_logs[0]["nt_xent"]
    report["first_step_nt_xent_distributed"] = distributed_logs[0]["nt_xent"]
    for key in ("nt_xent", "val_nt_xent", "loss", "contrastive_accuracy"):
        report[f"history_{key}_single"] = single.history_[key]
        report[f"history_{key}_distributed"] = distributed.history_[key]
    report["weights_difference"] = _largest_difference(
        single.SimCLR_model.get_weights(), distributed.SimCLR_model.get_weights())
    keras.utils.set_random_seed(0)
    report["weights_changed"] = _largest_difference(
        make_tiny_backbone().get_weights(), single.base_model.get_weights())

    nnclr = {"positives": "nearest_neighbour", "queue_size": 4 * GLOBAL_BATCH}
    (single, _), (distributed, _) = _train_twice(strategy, image_folder, **nnclr)
    queues = [simclr.SimCLR_model.get_layer("support_queue").queue.numpy() for simclr in (single, distributed)]
    report["nnclr_queue_difference"] = float(np.max(np.abs(queues[0] - queues[1])))
    report["nnclr_weights_difference"] = _largest_difference(
        single.SimCLR_model.get_weights(), distributed.SimCLR_model.get_weights())
    return report


def test_the_own_training_loop_is_keras_fit_on_one_device(tiny_image_folder):
    """StrategyFit under the default strategy: the logs, history and weights of `Model.fit`, callbacks alike."""
    runs = []
    for own_loop in (False, True):
        simclr = _own_loop_wrapper() if own_loop else _wrapper(None, **MULTI_WORKER_OPTIONS)
        logs = _BatchLogs()
        simclr.train(_image_data(tiny_image_folder), _image_data(tiny_image_folder, "val"), epochs=2,
                     callbacks=[logs], verbose=0)
        runs.append((simclr, logs.batches))
    (keras_fit, keras_batches), (own, own_batches) = runs
    assert [batch.keys() for batch in own_batches] == [batch.keys() for batch in keras_batches]
    for ours, theirs in zip(own_batches, keras_batches):
        assert ours == pytest.approx(theirs, abs=1e-5)
    assert sorted(own.history_) == sorted(keras_fit.history_)
    for key, values in keras_fit.history_.items():
        assert own.history_[key] == pytest.approx(values, abs=1e-5), key
    assert _largest_difference(own.SimCLR_model.get_weights(), keras_fit.SimCLR_model.get_weights()) < 1e-5


def _own_loop_wrapper(**options):
    import tensorflow as tf

    from simclr_wrap.training_loop import StrategyFit

    simclr = _wrapper(None, **MULTI_WORKER_OPTIONS, **options)
    simclr._strategy_fit = StrategyFit(simclr.SimCLR_model, tf.distribute.get_strategy(), GLOBAL_BATCH)
    return simclr


def test_the_own_training_loop_stops_on_a_non_finite_loss(tiny_image_folder, tmp_path):
    from simclr_wrap import NonFiniteLossError

    from data_generators import DataGeneratorSimCLR, frame_from_folder

    class NaNInTheSecondBatch(DataGeneratorSimCLR):
        def shard_of_batch(self, index, rows):
            inputs, target = super().shard_of_batch(index, rows)
            target[1] = np.nan if index == 1 else target[1]
            return inputs, target

    simclr = _own_loop_wrapper(save_path=str(tmp_path))
    broken = NaNInTheSecondBatch(frame_from_folder(tiny_image_folder), batch_size=GLOBAL_BATCH, width=TINY_SIZE,
                                 height=TINY_SIZE, seed=0)
    good = [weight.copy() for weight in simclr.SimCLR_model.get_weights()]
    with pytest.raises(NonFiniteLossError, match="round 1, epoch 1, batch 2: the loss became nan"):
        simclr.train(broken, epochs=2, verbose=0)
    for before, after in zip(good, simclr.SimCLR_model.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_the_own_training_loop_refuses_data_it_cannot_index(tiny_image_folder):
    import tensorflow as tf

    simclr = _own_loop_wrapper()
    data = _image_data(tiny_image_folder)
    (view_a, view_b), target = data[0]
    dataset = tf.data.Dataset.from_tensors(((view_a, view_b), target))
    with pytest.raises(TypeError, match="Expected data_train to be indexable data"):
        simclr._strategy_fit.fit(dataset)


RESUME_SCHEDULE = [(1, 1e-2, 1), ("conv1", 1e-2, 3)]


def resume_one_worker(image_folder, save_path, die_at=None):
    """Run `RESUME_SCHEDULE` with resume=True as one worker; die mid-epoch at `die_at` = (round, epoch, batch).

    Returns the largest difference of the final weights from one device
    running the schedule uninterrupted, the epochs run and the files written.
    """
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    simclr = _wrapper(strategy, save_path=save_path)
    trained = _BatchLogs()
    callbacks = [trained] + ([_DieAt(*die_at)] if die_at else [])
    simclr.train_schedule(_image_data(image_folder), _image_data(image_folder, "val"), RESUME_SCHEDULE,
                          callbacks=callbacks, verbose=0, resume=True)
    single = _wrapper(None)
    single.train_schedule(_image_data(image_folder), _image_data(image_folder, "val"), RESUME_SCHEDULE, verbose=0)
    return {"weights_difference": _largest_difference(single.SimCLR_model.get_weights(),
                                                      simclr.SimCLR_model.get_weights()),
            "batches_trained": len(trained.batches), "epochs": len(simclr.history_["nt_xent"]),
            "single_epochs": len(single.history_["nt_xent"]),
            "files": sorted(os.listdir(save_path)) if os.path.isdir(save_path) else []}


def _free_ports(count):
    import socket

    ports, sockets = [], []
    for _ in range(count):
        probe = socket.socket()
        probe.bind(("localhost", 0))
        sockets.append(probe)
        ports.append(probe.getsockname()[1])
    for probe in sockets:
        probe.close()
    return ports


def start_two_local_workers(call, imports="from tests.simclr_wrap.test_distribute import *"):
    """Start two worker processes on loopback, each printing `REPORT <json of call>`; return the processes.

    `call` is Python source evaluated in each worker, after `imports`, with
    `worker` bound to its index, e.g. "measure_one_worker('/tmp/images')".
    """
    ports = _free_ports(2)
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": [f"localhost:{port}" for port in ports]}, "task": {"type": "worker", "index": index}}
        script = textwrap.dedent(f"""
            import json, sys
            sys.path.insert(0, {os.getcwd()!r})
            {FLOAT32_IN_SUBPROCESS}
            {imports}
            worker = {index}
            print("REPORT " + json.dumps({call}), flush=True)
        """)
        env = {**os.environ, "TF_CONFIG": json.dumps(config), "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
        processes.append(subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
    return processes


def reports_of(processes, timeout=300):
    """Each process's report, or {"error": ...}; a process still running after `timeout` s is killed."""
    reports = []
    for process in processes:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            err += f"\n(killed after {timeout} s)"
        lines = [line for line in out.splitlines() if line.startswith("REPORT ")]
        reports.append(json.loads(lines[-1][len("REPORT "):]) if lines else
                       {"error": err[-3000:], "returncode": process.returncode})
    return reports


def run_two_local_workers(image_folder, timeout=300):
    """`measure_one_worker` in two processes on loopback: each one's report.

    Also a script: `python -m tests.simclr_wrap.test_distribute` prints what `measure` finds on two
    logical CPU devices, then the two-worker comparison.
    """
    return reports_of(start_two_local_workers(f"measure_one_worker({image_folder!r})"), timeout)


@pytest.fixture(scope="module")
def two_worker_reports(tmp_path_factory):
    folder = write_image_folder(tmp_path_factory.mktemp("multi_worker") / "images", n_per_class=6)
    return run_two_local_workers(folder)


def test_two_local_workers_train_as_one_device(two_worker_reports):
    for report in two_worker_reports:
        assert "error" not in report, report["error"]
        assert report["replicas"] == 2
        assert report["steps"] == MULTI_WORKER_EPOCHS * 2  # 18 images: 2 batches of 8 an epoch
        assert report["first_step_nt_xent_distributed"] == pytest.approx(report["first_step_nt_xent_single"], abs=1e-5)
        assert report["weights_changed"] > 1e-2  # training moved the weights: there is something to compare
        assert report["weights_difference"] < 1e-5


def test_two_local_workers_log_the_global_batch(two_worker_reports):
    for report in two_worker_reports:
        for key in ("nt_xent", "val_nt_xent", "loss", "contrastive_accuracy"):
            assert report[f"history_{key}_distributed"] == pytest.approx(report[f"history_{key}_single"], abs=1e-5)


def test_nnclr_on_two_workers_keeps_the_single_device_queue(two_worker_reports):
    for report in two_worker_reports:
        assert report["nnclr_queue_difference"] < 1e-5
        assert report["nnclr_weights_difference"] < 1e-5


def test_a_killed_worker_resumes_from_the_chiefs_state(tmp_path):
    folder = write_image_folder(tmp_path / "images", n_per_class=6)
    saves = [str(tmp_path / f"worker_{index}") for index in range(2)]  # as on two machines
    # Worker 1 dies after the first batch of round 2's second epoch; the chief then waits on it, and is killed.
    first = start_two_local_workers(f"resume_one_worker({folder!r}, {saves!r}[worker], (2, 1, 0) if worker else None)")
    try:
        assert first[1].wait(timeout=300) == 17, first[1].stderr.read()[-3000:]
    finally:
        first[0].kill()
        first[0].wait()
    with open(os.path.join(saves[0], "resume", "state.json")) as file:
        state = json.load(file)
    assert (state["round"], state["epochs_in_round"]) == (2, 1)
    assert not os.path.exists(os.path.join(saves[1], "resume"))  # only the chief writes
    reports = reports_of(start_two_local_workers(f"resume_one_worker({folder!r}, {saves!r}[worker])"))
    for report in reports:
        assert "error" not in report, report["error"]
        assert report["batches_trained"] == 2 * 2  # round 2's last two epochs of 2 batches: the rest was resumed
        assert report["epochs"] == report["single_epochs"] == 4
        assert report["weights_difference"] < 1e-5
    assert "simclr_best.keras" in reports[0]["files"] and reports[1]["files"] == []


if __name__ == "__main__":
    import tempfile
    from pathlib import Path

    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    with tempfile.TemporaryDirectory() as folder:
        images = write_image_folder(Path(folder) / "images", n_per_class=6)
        print(json.dumps(measure(images), indent=1))
        print(json.dumps(run_two_local_workers(images), indent=1))
