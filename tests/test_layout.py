"""tests/ mirrors src/phiscale/: each source module with logic has its test module at the mirrored path
(`models/scaling.py` -> `tests/models/test_scaling.py`, a package's `__init__.py` -> `test_init.py`).
And the house keeps its shape: every job in a room (package), only the shared modules loose at the
top, no module too long to read, the console scripts only parsing and printing.

Run as a script to list the modules without one: `python tests/test_layout.py`.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "phiscale"
TESTS = ROOT / "tests"


def has_logic(path: Path) -> bool:
    """A function, a class or a call at module level; a docstring, imports and constants are not logic."""
    tree = ast.parse(path.read_text(), str(path))
    return any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        or (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call))
        for node in tree.body
    )


def mirrored_test(source: Path) -> Path:
    relative = source.relative_to(PACKAGE)
    name = "test_init.py" if relative.name == "__init__.py" else f"test_{relative.name}"
    return TESTS / relative.parent / name


def unmirrored() -> list[str]:
    """Source modules with logic and no test module at the mirrored path."""
    return [str(p.relative_to(PACKAGE)) for p in sorted(PACKAGE.rglob("*.py"))
            if has_logic(p) and not mirrored_test(p).is_file()]


def test_every_module_with_logic_has_a_mirrored_test_module():
    assert unmirrored() == [], "add tests at " + ", ".join(
        str(mirrored_test(PACKAGE / m).relative_to(ROOT)) for m in unmirrored())


# The shape of the house (docs/ARCHITECTURE.md): the rooms, what may stay loose at the top, lengths.
ROOMS = {"models", "data", "augment", "train", "tracking", "sweeps", "slurm", "server", "report", "cli"}
LOOSE = {"__init__.py", "errors.py", "paths.py", "config.py"}  # what every room uses
MAX_MODULE_LINES = 450
MAX_CLI_LINES = {"sweep.py": 250}


def test_every_job_has_its_room_and_only_shared_modules_stay_at_the_top():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    loose = {p.name for p in PACKAGE.glob("*.py")}
    assert packages == ROOMS, f"packages differ from the rooms of docs/ARCHITECTURE.md: {sorted(packages ^ ROOMS)}"
    assert loose <= LOOSE and len(loose) <= 4, f"loose modules beside the packages: {sorted(loose - LOOSE)}"
    for room in ROOMS - {"cli"}:
        doc = ast.get_docstring(ast.parse((PACKAGE / room / "__init__.py").read_text()))
        assert doc and "import" in doc.lower(), f"{room}/__init__.py should say what the room owns and may import"


def test_no_module_is_too_long_to_read():
    lengths = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    long = {name: n for name, n in lengths.items() if n > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by idea): {long}"
    for name, limit in MAX_CLI_LINES.items():
        assert lengths[f"cli/{name}"] <= limit, f"cli/{name} has {lengths[f'cli/{name}']} lines (> {limit}): move logic to its room"


def test_the_rule_tells_logic_from_declarations(tmp_path):
    (tmp_path / "plain.py").write_text('"""Docs."""\nimport os\n__version__ = "1"\n')
    (tmp_path / "calls.py").write_text("import os\nos.environ.setdefault('X', '1')\n")
    (tmp_path / "defines.py").write_text("def f():\n    return 1\n")
    assert [has_logic(tmp_path / n) for n in ("plain.py", "calls.py", "defines.py")] == [False, True, True]
    assert mirrored_test(PACKAGE / "models" / "scaling.py") == TESTS / "models" / "test_scaling.py"
    assert mirrored_test(PACKAGE / "data" / "__init__.py") == TESTS / "data" / "test_init.py"


if __name__ == "__main__":
    without = [str(p.relative_to(PACKAGE)) for p in sorted(PACKAGE.rglob("*.py")) if not has_logic(p)]
    print("no logic (no test module needed):", ", ".join(without) or "-")
    print("logic without a mirrored test module:", ", ".join(unmirrored()) or "none")
