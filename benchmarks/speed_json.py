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
