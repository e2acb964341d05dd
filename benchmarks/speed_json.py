"""benchmarks/speed.json: each benchmark script records its own entries and keeps the others'."""

import json
import os

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "speed.json")


def read_speed_json(path=PATH):
    """The entries recorded so far at `path`, or {} where there is no file yet."""
    if not os.path.exists(path):
        return {}
    with open(path) as file:
        return json.load(file)


def write_speed_json(speed, path=PATH):
    """Write `speed` to `path` whole, through a temporary file, so a failed write leaves the old one."""
    temporary = f"{path}.tmp"
    with open(temporary, "w") as file:
        json.dump(speed, file, indent=1)
        file.write("\n")
    os.replace(temporary, path)


def machine():
    """What ran a result: the GPUs where Keras' backend has some, else the CPU, and the precision "auto" picks.

    This VM has moved between processors that /proc/cpuinfo names alike ("AMD EPYC"), one with bfloat16
    instructions and one without: family, model and that flag tell them apart, and they change both the
    speed and the precision a SimCLR run trains in by default.
    """
    import platform

    from simclr_wrap.precision import BFLOAT16_CPU_FLAGS, gpu_compute_capabilities, resolve_precision

    gpus = gpu_compute_capabilities()
    cores = f"{os.cpu_count()} CPU cores"
    if gpus:
        return f"{len(gpus)} GPU(s) of compute capability {gpus}, {cores}; precision auto: {resolve_precision('auto')}"
    fields = {}
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as file:
            for line in file:
                if ":" in line:
                    key, value = (part.strip() for part in line.split(":", 1))
                    fields.setdefault(key, value)
    flags = set(fields.get("flags", "").split())
    described = ", ".join([f"family {fields['cpu family']} model {fields['model']}"] * ("model" in fields)
                          + sorted(flags & set(BFLOAT16_CPU_FLAGS)))
    name = fields.get("model name", platform.processor() or platform.machine())
    return f"CPU {name}{f' ({described})' if described else ''}, {cores}; precision auto: {resolve_precision('auto')}"
