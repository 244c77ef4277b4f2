"""The core's layering: every folder of ``fracture/`` imports only folders on floors below its own.

The floors are the table of fracture/README.md ("Layers"); an import of a folder on the same floor
or above (including one inside a function) fails here, naming the file, the line and the fix.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "fracture"

FLOORS: dict[str, int] = {
    "errors": 1,
    "util": 2, "settings": 2, "models": 2,
    "preprocess": 3,
    "data": 4, "explain": 4, "recipes": 4,
    "evaluate": 5, "gate": 5, "cache": 5, "viz": 5, "gallery": 5,
    "checkpoints": 6,
    "serve": 7,
    "assess": 8,
    "train": 9, "reader_study": 9,
    "ui": 10, "cli": 10, "bench": 10,
    "__main__": 11,
}
"""Folder (or top-level module) -> floor. A folder may import folders on lower floors only."""


def _part(module: str) -> str | None:
    """``fracture.serve.scorer`` -> ``serve``; None for a module outside the core or the package itself."""
    parts = module.split(".")
    return parts[1] if parts[0] == "fracture" and len(parts) > 1 else None


def _imports(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name


def _own_part(path: Path) -> str:
    rel = path.relative_to(CORE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def test_every_folder_of_the_core_has_a_floor():
    parts = {_own_part(p) for p in CORE.rglob("*.py")} - {"__init__"}
    assert parts <= set(FLOORS), f"give these a floor in FLOORS and in fracture/README.md: {parts - set(FLOORS)}"


def test_no_import_runs_back_up_or_across():
    wrong = []
    for path in sorted(CORE.rglob("*.py")):
        own = _own_part(path)
        if own == "__init__":
            continue
        for line, module in _imports(path):
            target = _part(module)
            if target is None or target == own:
                continue
            if FLOORS[target] >= FLOORS[own]:
                wrong.append(f"{path.relative_to(CORE.parent)}:{line} imports {module} "
                             f"({target} is on floor {FLOORS[target]}, {own} on {FLOORS[own]})")
    assert not wrong, ("imports that run back up or across (move the code to the layer that owns it, or pass "
                       "what it needs in from above):\n" + "\n".join(wrong))


@pytest.mark.parametrize("module", ["fracture.cli", "fracture.serve.scorer", "fracture.checkpoints.meta",
                                    "fracture.evaluate.calibration", "fracture.gate.radiograph",
                                    "fracture.explain.names", "fracture.recipes.catalogue"])
def test_light_modules_import_no_torch(module):
    import subprocess
    import sys

    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=CORE.parent, check=True)
    assert out.stdout.strip() == "False", f"importing {module} imports torch"


def _module_name(path: Path) -> str:
    rel = path.relative_to(CORE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_two_modules_import_each_other_round_a_circle():
    modules = {_module_name(p): p for p in CORE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for _, module in _imports(path):
            while module and module not in modules:  # "from fracture.x import y" -> fracture.x
                module = module.rpartition(".")[0]
            if module and module != name and not path.name == "__init__.py":
                targets.add(module)
        graph[name] = targets - {m for m in targets if modules[m].name == "__init__.py"}  # package faces
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (circle := visit(node)):
            pytest.fail("modules that import each other round a circle (give the shared piece one home below "
                        "both): " + " -> ".join(circle))
