"""SimCLR(precision=...): the backbone and head compute in a mixed policy while training, and only then."""

import sys

import keras
import numpy as np
import pytest

import simclr_wrap.precision
from data_generators import DataGeneratorSimCLR, frame_from_folder
from simclr_wrap import SimCLR
from simclr_wrap.layers import SoftmaxCosineSim
from simclr_wrap.precision import computing_in, gpu_compute_capabilities, hardware_facts, policy_for, resolve_precision
from simclr_wrap.unfreezing import flat_layers
from tests.conftest import TINY_SIZE, make_tiny_backbone, write_image_folder


@pytest.fixture(scope="module")
def frame(tmp_path_factory):
    return frame_from_folder(write_image_folder(tmp_path_factory.mktemp("precision") / "images", n_per_class=8))


def generators(frame):
    options = dict(batch_size=4, width=TINY_SIZE, height=TINY_SIZE, seed=0)
    return DataGeneratorSimCLR(frame, subset="train", **options), DataGeneratorSimCLR(frame, subset="val", **options)


def wrapper(precision, backbone=None, **options):
    keras.utils.set_random_seed(0)
    backbone = make_tiny_backbone() if backbone is None else backbone
    options = {"feat_dims_ph": (16, 8), "save_path": None, "seed": 0, "num_of_unfrozen_layers": "conv2", **options}
    return SimCLR(backbone, 4, precision=precision, **options)


@pytest.fixture
def computed_dtypes(monkeypatch):
    """{layer name: (input dtype, output dtype)} of each Conv2D, Dense and SoftmaxCosineSim call traced or run."""
    seen = {}
    for layer_class in (keras.layers.Conv2D, keras.layers.Dense, SoftmaxCosineSim):
        def recording(self, inputs, *args, _call=layer_class.call, **kwargs):
            outputs = _call(self, inputs, *args, **kwargs)
            seen[self.name] = (keras.backend.standardize_dtype(inputs.dtype),
                               keras.backend.standardize_dtype(outputs.dtype))
            return outputs

        monkeypatch.setattr(layer_class, "call", recording)
    return seen


def policies(model):
    return {layer.name: layer.dtype_policy.name for layer in flat_layers(model)}


# Which policy "auto" picks.

@pytest.mark.parametrize("capabilities, flags, expected", [
    ([(8, 0)], set(), "mixed_bfloat16"),  # A100 and later: bfloat16 tensor cores
    ([(7, 0), (8, 6)], set(), "mixed_bfloat16"),
    ([(7, 5)], {"avx512_bf16"}, "mixed_float16"),  # the GPU trains, whatever the CPU has
    ([None], set(), "mixed_float16"),  # a GPU that gives no compute capability
    ([], {"avx512f", "avx512_bf16"}, "mixed_bfloat16"),
    ([], {"amx_bf16"}, "mixed_bfloat16"),
    ([], {"avx2", "fma", "avx512f"}, "float32"),  # this project's CPU: bfloat16 would be emulated
    ([], set(), "float32"),
])
def test_auto_picks_bfloat16_where_the_hardware_has_it_float16_on_older_gpus_else_float32(capabilities, flags,
                                                                                         expected):
    assert policy_for(capabilities, flags) == expected


def test_the_hardware_facts_are_the_gpus_compute_capabilities_and_the_cpuinfo_flags(tmp_path, monkeypatch):
    import tensorflow as tf

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind: ["gpu0", "gpu1"] if kind == "GPU" else [])
    details = {"gpu0": {"compute_capability": (8, 0)}, "gpu1": {}}
    monkeypatch.setattr(tf.config.experimental, "get_device_details", lambda gpu: details[gpu])
    assert hardware_facts(str(cpuinfo)) == ([(8, 0), None], {"fpu", "avx512f", "avx512_bf16"})
    assert hardware_facts(str(tmp_path / "missing")) == ([(8, 0), None], set())


def test_auto_resolves_through_the_hardware_facts_and_stays_auto_in_the_config(monkeypatch):
    monkeypatch.setattr(simclr_wrap.precision, "hardware_facts", lambda: ([(7, 5)], set()))
    assert resolve_precision("auto") == "mixed_float16"
    assert resolve_precision("mixed_bfloat16") == "mixed_bfloat16"
    simclr = wrapper("auto")
    assert isinstance(simclr.SimCLR_model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert simclr.get_config()["precision"] == "auto"  # decided again wherever the config trains
    monkeypatch.setattr(simclr_wrap.precision, "hardware_facts", lambda: ([], {"avx2"}))
    assert not isinstance(wrapper("auto").SimCLR_model.optimizer, keras.optimizers.LossScaleOptimizer)


def test_precision_is_an_option_of_the_config_checked_like_the_others():
    simclr = wrapper("mixed_bfloat16")
    assert simclr.get_config()["precision"] == "mixed_bfloat16" and SimCLR.default_config()["precision"] == "auto"
    assert SimCLR.from_config(simclr.get_config(), make_tiny_backbone()).get_config() == simclr.get_config()
    with pytest.raises(ValueError, match=r"Expected precision to be one of \['float32', 'mixed_bfloat16', "
                                         r"'mixed_float16', 'auto'\]. Received: precision='bfloat16'"):
        wrapper("bfloat16")


@pytest.mark.parametrize("facts, policy, expected", [
    (([], {"avx512f", "avx512_bf16"}), "mixed_bfloat16", "bfloat16"),  # a CPU that computes bfloat16
    (([(9, 0)], set()), "mixed_bfloat16", "bfloat16"),  # an H100 or H200
    (([], {"avx2", "fma"}), "float32", "float32"),  # a CPU that would emulate it
])
def test_by_default_the_step_computes_in_bfloat16_where_the_hardware_has_it(frame, computed_dtypes, monkeypatch,
                                                                            facts, policy, expected):
    monkeypatch.setattr(simclr_wrap.precision, "hardware_facts", lambda: facts)
    keras.utils.set_random_seed(0)
    simclr = SimCLR(make_tiny_backbone(), 4, feat_dims_ph=(16, 8), save_path=None, seed=0,
                    num_of_unfrozen_layers="conv2")
    assert (simclr.precision, simclr.policy) == ("auto", policy)
    computed_dtypes.clear()
    simclr.train(*generators(frame), epochs=1, verbose=0)
    assert computed_dtypes["conv2"] == computed_dtypes["projection_1"] == (expected, expected)
    assert computed_dtypes["softmax_cosine_sim"] == ("float32", "float32")
    # precision="float32" turns it off on the same hardware.
    computed_dtypes.clear()
    wrapper("float32").train(*generators(frame), epochs=1, verbose=0)
    assert computed_dtypes["conv2"] == ("float32", "float32")


# Training in a mixed policy.

def test_the_backbone_and_head_train_in_bfloat16_while_the_similarities_and_loss_stay_float32(frame, computed_dtypes,
                                                                                              tmp_path):
    simclr = wrapper("mixed_bfloat16", save_path=str(tmp_path))
    computed_dtypes.clear()  # the calls that built the model
    simclr.train(*generators(frame), epochs=1, verbose=0)
    assert computed_dtypes["conv2"] == ("bfloat16", "bfloat16")
    assert computed_dtypes["projection_1"] == computed_dtypes["projection_2"] == ("bfloat16", "bfloat16")
    assert computed_dtypes["softmax_cosine_sim"] == ("float32", "float32")
    assert np.isfinite(simclr.history_["nt_xent"]).all() and np.isfinite(simclr.history_["val_nt_xent"]).all()
    # Afterwards the layers compute as they were given: float32, in memory and in every file written.
    assert set(policies(simclr.base_model).values()) == {"float32"}
    for layer in simclr._tail_layers[1]:
        assert layer.dtype_policy.name == "float32"
    round_backbone = keras.models.load_model(tmp_path / "base_model_round_1.keras")
    assert set(policies(round_backbone).values()) == {"float32"}
    best = keras.models.load_model(tmp_path / "simclr_best.keras")  # written in the middle of the round
    assert set(policies(best.get_layer(simclr.base_model.name)).values()) == {"float32"}
    assert best.get_layer("projection_1").dtype_policy.name == "float32"
    # Steps traced in the round are not reused after it: evaluate computes in float32 again.
    computed_dtypes.clear()
    simclr.SimCLR_model.evaluate(generators(frame)[1], verbose=0)
    assert computed_dtypes["conv2"] == ("float32", "float32")


def test_the_layers_get_their_own_policies_back_when_training_raises(frame):
    class Interrupt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise KeyboardInterrupt

    simclr = wrapper("mixed_bfloat16")
    with pytest.raises(KeyboardInterrupt):
        simclr.train(*generators(frame), epochs=1, callbacks=[Interrupt()], verbose=0)
    assert set(policies(simclr.base_model).values()) == {"float32"}


def test_float32_leaves_a_backbone_the_user_built_in_mixed_precision_as_it_is(frame, computed_dtypes):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(0)
        simclr = wrapper("float32", backbone=make_tiny_backbone())
        computed_dtypes.clear()
        simclr.train(*generators(frame), epochs=1, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert computed_dtypes["conv2"] == ("bfloat16", "bfloat16")
    assert computed_dtypes["softmax_cosine_sim"] == ("float32", "float32")  # built under the global policy too
    assert set(policies(simclr.base_model).values()) == {"mixed_bfloat16"}
    assert not isinstance(simclr.SimCLR_model.optimizer, keras.optimizers.LossScaleOptimizer)


def test_mixed_float16_scales_the_loss_and_a_view_bank_round_shares_the_optimizer(frame, computed_dtypes,
                                                                                  monkeypatch):
    simclr = wrapper("mixed_float16", view_bank=2)
    optimizer = simclr.SimCLR_model.optimizer
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    compiled = []
    compile_model = simclr._compile_model
    monkeypatch.setattr(simclr, "_compile_model", lambda model, *args: compiled.append(model) or compile_model(
        model, *args))
    computed_dtypes.clear()
    simclr.train_schedule(*generators(frame), [("conv2", 1e-3, 2)], verbose=0)  # 2 epochs: a bank of 2 serves
    trainer, model = compiled[-1], simclr.SimCLR_model
    assert trainer is not model and trainer.optimizer is model.optimizer  # not wrapped a second time
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert not isinstance(model.optimizer.inner_optimizer, keras.optimizers.LossScaleOptimizer)
    assert computed_dtypes["conv2"] == ("float16", "float16")  # trained from the bank's activations
    assert int(model.optimizer.iterations) > 0 and np.isfinite(simclr.history_["nt_xent"]).all()
    assert set(policies(simclr.base_model).values()) == {"float32"}


def test_mixed_float16_resumes_its_loss_scale_with_the_optimizer(frame, tmp_path):
    from tests.simclr_wrap.test_resume import InterruptAt, Interrupted

    class LossScale(keras.callbacks.Callback):
        """The loss scale's state (steps since it last changed, its value) as each epoch starts and ends."""

        def __init__(self):
            super().__init__()
            self.states = []

        def state(self):
            optimizer = self.model.optimizer
            return (int(optimizer.step_counter), float(optimizer.dynamic_scale)) if optimizer.built else None

        def on_epoch_begin(self, epoch, logs=None):
            self.states.append(("begin", epoch, self.state()))

        def on_epoch_end(self, epoch, logs=None):
            self.states.append(("end", epoch, self.state()))

    def run(*callbacks):
        simclr = wrapper("mixed_float16", save_path=str(tmp_path), early_stopping_patience=10)
        simclr.train_schedule(*generators(frame), [("conv2", 1e-3, 2)], callbacks=list(callbacks), verbose=0,
                              resume=True)

    interrupted, resumed = LossScale(), LossScale()
    with pytest.raises(Interrupted):
        run(interrupted, InterruptAt(2))
    run(resumed)
    saved = interrupted.states[1]  # as the resume state was written, after epoch 1
    assert saved[:2] == ("end", 0) and saved[2] not in (None, (0, 32768.0))  # float16 overflowed at first: halved
    assert resumed.states[0] == ("begin", 1, saved[2])


def test_the_own_training_loop_scales_the_loss_under_mixed_float16(frame, monkeypatch):
    import tensorflow as tf

    from simclr_wrap.training_loop import StrategyFit

    scaled = []
    scale_loss = keras.optimizers.LossScaleOptimizer.scale_loss
    monkeypatch.setattr(keras.optimizers.LossScaleOptimizer, "scale_loss",
                        lambda self, loss: scaled.append(loss) or scale_loss(self, loss))
    simclr = wrapper("mixed_float16")
    simclr._strategy_fit = StrategyFit(simclr.SimCLR_model, tf.distribute.get_strategy(), 4)
    simclr.train(*generators(frame), epochs=1, verbose=0)
    assert scaled and np.isfinite(simclr.history_["nt_xent"]).all()
    assert int(simclr.SimCLR_model.optimizer.iterations) > 0  # finite scaled gradients: the steps were applied


def test_computing_in_reaches_nested_models_and_custom_layers_sublayers():
    class Block(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(3, name="inside_block")

        def call(self, x):
            return self.dense(x)

    inner = keras.Sequential([keras.Input((3,)), Block(name="block")], name="inner")
    model = keras.Sequential([keras.Input((3,)), inner, keras.layers.Dense(2, name="last")])
    quantized = keras.layers.Dense(2, dtype="int8_from_float32", name="quantized")
    with computing_in("mixed_bfloat16", [model, quantized]):
        assert keras.backend.standardize_dtype(model(np.ones((1, 3), "float32")).dtype) == "bfloat16"
        assert inner.layers[0].dense.dtype_policy.name == "mixed_bfloat16"
        assert quantized.dtype_policy.name == "int8_from_float32"  # not a float32 layer: left alone
    assert inner.layers[0].dense.dtype_policy.name == "float32" and model.layers[-1].dtype_policy.name == "float32"


def test_under_jax_the_gpus_are_those_jax_sees(monkeypatch):
    # A run under KERAS_BACKEND=jax may have no TensorFlow at all: the GPUs come from jax.devices().
    import types

    devices = [types.SimpleNamespace(platform="gpu", compute_capability="9.0"),
               types.SimpleNamespace(platform="cpu"), types.SimpleNamespace(platform="gpu")]
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    monkeypatch.setitem(sys.modules, "jax", types.SimpleNamespace(devices=lambda: devices))
    assert gpu_compute_capabilities() == [(9, 0), None]
    monkeypatch.setitem(sys.modules, "jax", types.SimpleNamespace(devices=lambda: devices[1:2]))
    assert gpu_compute_capabilities() == []


@pytest.mark.parametrize("gpus, expected", [([(9, 0)], True), ([], False)])
def test_augment_on_auto_makes_the_views_in_the_step_where_the_backend_sees_a_gpu(monkeypatch, gpus, expected):
    import evaluation.pretraining

    monkeypatch.setattr(evaluation.pretraining, "gpu_compute_capabilities", lambda: gpus)
    assert evaluation.pretraining._views_in_step("auto", None) is expected
    assert evaluation.pretraining._views_in_step("host", None) is False  # asked for, whatever the hardware
