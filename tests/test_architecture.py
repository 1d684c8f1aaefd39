"""The package's shape: layers that import only downwards, no import cycles, a thin command line, one definition per option."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "moirai_cli"

# Each layer may import from its own layer and the ones before it, never from a later one.
LAYERS = [
    {"moirai_cli", "moirai_cli.errors", "moirai_cli.runtime"},
    {"moirai_cli.data", "moirai_cli.model", "moirai_cli.plotting"},
    {"moirai_cli.forecasting"},
    {"moirai_cli.evaluation"},
    {"moirai_cli.training"},
    {"moirai_cli.engines", "moirai_cli.distributed", "moirai_cli.spark"},
    {"moirai_cli.cli"},
]


def _modules() -> dict[str, Path]:
    return {
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): path
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def _layer(module: str) -> int:
    """The index of the layer holding a module (its own name or its package's)."""
    parts = module.split(".")
    for depth in range(len(parts), 0, -1):
        for index, layer in enumerate(LAYERS):
            if ".".join(parts[:depth]) in layer:
                return index
    raise AssertionError(f"{module} is in no layer")


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """The moirai_cli modules a file imports (anywhere, or at module level outside `if TYPE_CHECKING`)."""
    tree = ast.parse(path.read_text())
    nodes = []
    if top_level_only:
        nodes = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    else:
        nodes = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("moirai_cli"):
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & set(_modules())
            found.update(submodules or {node.module})  # `from package import module` imports that module
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("moirai_cli"))
    return found


# The one import against the layers: MoiraiForecaster.fit is the training layer's entry point on the forecaster.
ALLOWED_UPWARD = {("moirai_cli.forecasting.pipeline", "moirai_cli.training")}


def test_no_module_imports_a_later_layer():
    wrong = [
        f"{module} imports {imported}"
        for module, path in _modules().items()
        for imported in _imports(path)
        if _layer(imported) > _layer(module) and (module, _layer(imported)) not in {(m, _layer(i)) for m, i in ALLOWED_UPWARD}
    ]
    assert wrong == []
    assert not (_imports(PACKAGE / "data" / "frames.py") & {"moirai_cli.model"})  # data and model stand apart


def test_no_import_cycle_at_module_level():
    modules = _modules()
    graph = {name: {dep for dep in _imports(path, top_level_only=True) if dep in modules and dep != name} for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for dep in graph[name]:
            assert state.get(dep) != 1, f"import cycle: {' -> '.join(trail + [name, dep])}"
            if dep not in state:
                visit(dep, trail + [name])
        state[name] = 2

    for name in graph:
        if name not in state:
            visit(name, [])


def test_the_command_line_is_thin():
    for path in (PACKAGE / "cli").glob("*.py"):
        lines = path.read_text().splitlines()
        assert len(lines) <= 300, f"{path.name} has {len(lines)} lines"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                length = node.end_lineno - node.lineno + 1
                assert length <= 40, f"{path.name}: {node.name} has {length} lines"


def test_every_job_option_is_defined_once_for_the_command_line():
    from moirai_cli.cli import options
    from moirai_cli.forecasting.job import BacktestJob, ForecastJob, ModelSpec, PredictSettings, ReadOptions

    fields = [field.name for kind in (ModelSpec, ReadOptions, PredictSettings) for field in dataclasses.fields(kind)]
    fields += [field.name for field in dataclasses.fields(BacktestJob) if field.name not in {f.name for f in dataclasses.fields(ForecastJob)}]
    assert sorted(fields) == sorted(options.JOB_OPTIONS)
    names = [opt.name for opt in (*options.READ_OPTIONS, *options.MODEL_OPTIONS, *options.PREDICT_OPTIONS, *options.WINDOW_OPTIONS)]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("module", ["moirai_cli.cli"])
def test_starting_the_command_line_imports_no_heavy_library(module):
    probe = f"import sys, {module}; print(','.join(m for m in ('torch', 'pandas', 'numpy', 'pyarrow', 'rich') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
