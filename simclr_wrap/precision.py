"""Which dtype policy a SimCLR run trains in: float32, mixed bfloat16 or mixed float16.

`SimCLR(precision=...)` takes one of `PRECISIONS`. "auto" picks by the
hardware (`policy_for`): bfloat16 where the GPUs or the CPU compute it
natively, float16 with loss scaling on older GPUs, float32 elsewhere (on a
CPU without bfloat16 instructions, TensorFlow emulates bfloat16, at about a
third of float32's speed).

The policy is not set globally: `computing_in` gives the layers of a
built model the policy for the length of a `with` block (Keras keeps their
variables in float32 under both mixed policies) and puts their own back
afterwards, so a backbone trained in mixed precision is handed back, and
saved, computing as it was given.
"""

import contextlib

import keras

from data_generators.checks import check_choice
from simclr_wrap.keras_compat import sublayers

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16", "auto")
# GPUs from NVIDIA's Ampere (compute capability 8.0) on have bfloat16 tensor cores.
BFLOAT16_GPU = (8, 0)
# /proc/cpuinfo's names of the x86 instructions that compute in bfloat16 (Cooper Lake's, Sapphire Rapids' AMX).
BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = "/proc/cpuinfo"


def policy_for(gpu_compute_capabilities, cpu_flags):
    """The dtype policy "auto" picks for a machine with these GPUs and this CPU.

    With GPUs the GPUs decide (they run the training step): bfloat16 if one
    has bfloat16 tensor cores, else float16, which needs loss scaling.
    Without, bfloat16 if the CPU has bfloat16 instructions, else float32.

    Args:
        gpu_compute_capabilities: `(major, minor)` of each GPU (None for one
            that does not say, such as a non-CUDA one); empty without GPUs.
        cpu_flags: the CPU's feature flags, named as in /proc/cpuinfo.

    Returns:
        "mixed_bfloat16", "mixed_float16" or "float32".

    Example:
    >>> policy_for([(8, 0)], cpu_flags=())  # A100
    'mixed_bfloat16'
    >>> policy_for([(7, 0), (9, 0)], cpu_flags=())  # a V100 beside an H100
    'mixed_bfloat16'
    >>> policy_for([(7, 5), None], cpu_flags={"avx512_bf16"})  # T4s: the GPUs train, not the CPU
    'mixed_float16'
    >>> policy_for([], cpu_flags={"avx512f", "avx512_bf16"}), policy_for([], cpu_flags={"amx_bf16"})
    ('mixed_bfloat16', 'mixed_bfloat16')
    >>> policy_for([], cpu_flags={"avx2", "fma", "avx512f"})
    'float32'
    """
    capabilities = list(gpu_compute_capabilities)
    if capabilities:
        has_bfloat16 = any(capability is not None and tuple(capability) >= BFLOAT16_GPU
                           for capability in capabilities)
        return "mixed_bfloat16" if has_bfloat16 else "mixed_float16"
    return "mixed_bfloat16" if set(cpu_flags) & set(BFLOAT16_CPU_FLAGS) else "float32"


def gpu_compute_capabilities():
    """`(major, minor)` of each GPU that Keras' backend trains on (None for one that does not say); [] without.

    Asked of the backend in use, so that a run under JAX (which may have no
    TensorFlow installed) sees the GPUs JAX sees.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return [tf.config.experimental.get_device_details(gpu).get("compute_capability")
                for gpu in tf.config.list_physical_devices("GPU")]
    if backend == "jax":
        import jax

        return [_major_minor(getattr(device, "compute_capability", None))
                for device in jax.devices() if device.platform == "gpu"]
    if backend == "torch":
        import torch

        return [torch.cuda.get_device_capability(index) for index in range(torch.cuda.device_count())]
    return []


def _major_minor(capability):
    """(9, 0) from JAX's "9.0"; None from None or from what is not "major.minor".

    >>> _major_minor("9.0"), _major_minor(None), _major_minor("sm_90")
    ((9, 0), None, None)
    """
    try:
        major, minor = str(capability).split(".")
        return int(major), int(minor)
    except ValueError:
        return None


def hardware_facts(cpuinfo=CPUINFO):
    """`(gpu_compute_capabilities, cpu_flags)` of this machine, as `policy_for` takes them.

    The GPUs are those Keras' backend sees (`gpu_compute_capabilities`); the
    CPU flags are read from `cpuinfo` (none where the file does not exist, as
    outside Linux).
    """
    flags = set()
    try:
        with open(cpuinfo) as file:
            for line in file:
                name, _, value = line.partition(":")
                if name.strip() == "flags":
                    flags = set(value.split())
                    break  # every core lists the same flags
    except OSError:
        pass
    return gpu_compute_capabilities(), flags


def resolve_precision(precision):
    """The dtype policy name `precision` stands for: "auto" decided by `policy_for`, the others as they are.

    Raises:
        ValueError: `precision` is not one of `PRECISIONS`.

    Example:
    >>> resolve_precision("mixed_float16")
    'mixed_float16'
    >>> resolve_precision("bf16")
    Traceback (most recent call last):
    ...
    ValueError: Expected precision to be one of ['float32', 'mixed_bfloat16', 'mixed_float16', 'auto']. Received: precision='bf16'
    """
    check_choice("precision", precision, PRECISIONS)
    return policy_for(*hardware_facts()) if precision == "auto" else precision


@contextlib.contextmanager
def computing_in(policy, layers, compiled=()):
    """Within the block, `layers` and every layer inside them compute in dtype policy `policy`.

    Only layers with float32 variables and no quantization change (integer,
    float64 or quantized layers keep theirs); at the end of the block each
    gets its own policy back, also when the block raises. "float32" changes
    nothing: it leaves every layer as it was built, mixed or not.

    Args:
        policy: a dtype policy name, e.g. "mixed_bfloat16".
        layers: models or layers.
        compiled: compiled models that run `layers`: the training, test and
            predict steps they traced are dropped as the block starts and
            ends, since Keras would otherwise run a step traced in the other
            policies.

    Yields:
        `as_given`: a function giving a context manager inside which the
        layers compute in their own policies again, e.g. to save a model as
        it was given from within the block.

    Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> with computing_in("mixed_bfloat16", [model]) as as_given:
    ...     inside = keras.backend.standardize_dtype(model(keras.ops.ones((1, 3))).dtype)
    ...     with as_given():
    ...         given = model.layers[0].dtype_policy.name
    >>> inside, given, model.layers[0].dtype_policy.name, model.layers[0].kernel.dtype
    ('bfloat16', 'float32', 'float32', 'float32')
    """
    own = {}
    if policy != "float32":
        for layer in layers:
            for inner in sublayers(layer):
                current = inner.dtype_policy
                if current.variable_dtype == "float32" and not current.quantization_mode:
                    own.setdefault(id(inner), (inner, current))

    def set_policies(mixed):
        for layer, given in own.values():
            layer.dtype_policy = policy if mixed else given

    @contextlib.contextmanager
    def as_given():
        set_policies(mixed=False)
        try:
            yield
        finally:
            set_policies(mixed=True)

    def forget_traced_steps():
        if own:
            for model in compiled:
                model.train_function = model.test_function = model.predict_function = None

    set_policies(mixed=True)
    forget_traced_steps()
    try:
        yield as_given
    finally:
        set_policies(mixed=False)
        forget_traced_steps()
