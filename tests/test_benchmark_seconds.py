"""benchmarks/benchmark_seconds.py: a benchmark's wall clock split by part, two runs into speed.json."""

import importlib.util
import json
import os

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def load_script():
    spec = importlib.util.spec_from_file_location("benchmark_seconds",
                                                  os.path.join(ROOT, "benchmarks", "benchmark_seconds.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def results(linear, fine_tuned, simclr, stages):
    records = [{"classifier": "linear", "seconds": linear / 2}] * 2 + [{"classifier": "fine_tuned",
                                                                        "seconds": fine_tuned}]
    return {"records": records, "durations_s": {"before": stages[0], "simclr run 0": simclr, "after": stages[1]}}


def test_the_parts_add_up_and_speed_json_keeps_its_other_entries(tmp_path):
    script = load_script()
    before, after = tmp_path / "before.json", tmp_path / "after.json"
    before.write_text(json.dumps(results(100.0, 300.0, 200.0, (350.0, 150.0))))
    after.write_text(json.dumps(results(10.0, 300.0, 200.0, (250.0, 100.0))))
    speed = tmp_path / "speed.json"
    speed.write_text(json.dumps({"linear_probe": {"speedup": 10.0}}))
    script.main([str(before), str(after), "--name", "vgg16", "--json", str(speed)])
    written = json.loads(speed.read_text())
    assert written["linear_probe"] == {"speedup": 10.0}
    entry = written["benchmark"]
    assert (entry["vgg16_seconds_before"], entry["vgg16_seconds_after"], entry["vgg16_ratio"]) == (700.0, 550.0, 0.786)
    assert entry["vgg16_parts_after"] == {"linear": 10.0, "fine_tuned": 300.0, "simclr": 200.0,
                                          "extraction_and_rest": 40.0, "total": 550.0}
