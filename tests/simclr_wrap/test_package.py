"""The model floor stands on its own: no pandas, OpenCV or matplotlib through our code, no import of `evaluation`.

Keras itself imports pandas, cv2 and matplotlib when they are installed (its
data adapters and visualisation utilities), so the modules loaded after
`import simclr_wrap` say nothing about our own imports. Instead a child
process makes those three unimportable before anything else is imported
(Keras tolerates that) and uses the package; and a static walk over the
import statements of `simclr_wrap` and of every module of ours it reaches
finds any import of them, or of `evaluation` (an arrow pointing up a floor).
"""

import ast
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUR_PACKAGES = ("data_generators", "simclr_wrap", "evaluation")
# What the model floor must not import, directly or through the modules of ours it imports.
FORBIDDEN = ("evaluation", "pandas", "cv2", "matplotlib")

_CHILD = textwrap.dedent(
    """
    import sys

    for name in ("pandas", "cv2", "matplotlib"):
        sys.modules[name] = None  # `import name` now raises ImportError

    import os

    import keras

    import simclr_wrap
    from simclr_wrap import SimCLR, backbones, distribute, heads, monitors, resume, unfreezing
    from simclr_wrap.callbacks import save_model_atomically

    keras.utils.set_random_seed(0)
    backbone = keras.Sequential(
        [keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, name="conv"), keras.layers.ReLU(name="relu")],
        name="tiny",
    )
    simclr = SimCLR(backbone, 4, feat_dims_ph=(8, 4), save_path=None)
    path = save_model_atomically(simclr.SimCLR_model, os.path.join(sys.argv[1], "simclr.keras"))
    assert os.path.getsize(path) > 0
    print("evaluation imported:", "evaluation" in sys.modules)
    print("saved")
    """
)


def test_the_model_works_with_pandas_opencv_and_matplotlib_unimportable(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "evaluation imported: False" in result.stdout
    assert result.stdout.strip().endswith("saved") and (tmp_path / "simclr.keras").is_file()


def _source_file(module):
    """The file of one of our modules (a package's __init__.py for a package), or None for anything else."""
    base = os.path.join(ROOT, *module.split("."))
    for candidate in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(candidate):
            return candidate
    return None


def _imported_modules(path, module):
    """Every module that the file imports anywhere in it (functions included), as dotted names."""
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    imported = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package upward
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            imported.append(source)
            # `from package import module` imports the module too.
            imported += [f"{source}.{alias.name}" for alias in node.names if _source_file(f"{source}.{alias.name}")]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in (
            "import_module",
            "__import__",
        ):
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                imported.append(node.args[0].value)
    return imported


def _with_parents(module):
    """`a.b.c` runs the __init__ of `a` and `a.b` before its own code."""
    parts = module.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts) + 1)]


def forbidden_imports(start_package):
    """(importer, imported) for each import of FORBIDDEN reached from the modules of `start_package`."""
    folder = os.path.join(ROOT, start_package)
    todo = [f"{start_package}.{name[:-3]}" if name != "__init__.py" else start_package
            for name in sorted(os.listdir(folder)) if name.endswith(".py")]
    seen, found = set(), []
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _source_file(module)
        for imported in _imported_modules(path, module):
            if imported.split(".")[0] in FORBIDDEN:
                found.append((module, imported))
            elif imported.split(".")[0] in OUR_PACKAGES:
                todo += [name for name in _with_parents(imported) if _source_file(name) and name not in seen]
    return found


def test_no_module_of_the_model_floor_imports_evaluation_pandas_opencv_or_matplotlib():
    assert forbidden_imports("simclr_wrap") == []


def test_the_static_check_sees_imports_in_functions_and_through_our_modules():
    # The data floor's frames and visualisation do import pandas, cv2 and matplotlib: the walk must find them.
    found = dict(forbidden_imports("data_generators"))
    assert found.get("data_generators.frames") in ("cv2", "pandas")
    assert found.get("data_generators.visualize") == "matplotlib.figure"


@pytest.mark.parametrize("source, expected", [
    ("import pandas as pd", ["pandas"]),
    ("def f():\n    from matplotlib import pyplot", ["matplotlib"]),
    ("import importlib\nimportlib.import_module('cv2')", ["importlib", "cv2"]),
    ("from evaluation.linear import LinearProbe", ["evaluation.linear"]),
])
def test_imports_are_read_from_the_source(tmp_path, source, expected):
    path = tmp_path / "module.py"
    path.write_text(source)
    assert _imported_modules(str(path), "simclr_wrap.module") == expected
