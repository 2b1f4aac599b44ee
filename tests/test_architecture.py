"""The direction of imports inside the package, as the README's "Architecture" section draws it:

    cli -> bench, training, tasks -> nn -> engine
                                  \\-> data, and the shared utility modules

Nothing below imports anything above it, and the three experiment packages (bench, training,
tasks) do not import each other. A new module lands in one of these layers.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pyg_rbp"
UTILITIES = {"numerics", "profiling", "resolver", "results", "runtime"}
ALLOWED = {
    "engine": set(),
    "data": set(),
    **{u: set() for u in UTILITIES},
    "nn": {"engine"} | UTILITIES,
    "training": {"data", "engine", "nn"} | UTILITIES,
    "tasks": {"data", "engine", "nn"} | UTILITIES,
    "bench": {"data", "engine", "nn"} | UTILITIES,
    "cli": {"", "bench", "data", "engine", "nn", "tasks", "training"} | UTILITIES,
    "": {"engine", "nn", "data"},  # pyg_rbp/__init__.py re-exports the public API
}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pyg_rbp"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("pyg_rbp")}
    return found


def test_imports_point_one_way():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        layer = _layer(module.removesuffix(".__init__"))
        assert layer in ALLOWED, f"{path}: a new top-level module or package; give it a layer here"
        for target in _imports(path):
            other = _layer(target)
            if other != layer and other not in ALLOWED[layer]:
                wrong.append(f"{module} imports {target} ({layer} -> {other})")
    assert not wrong, "\n".join(wrong)


def test_no_module_is_much_over_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 460}
    assert not long, f"split these by job: {long}"
