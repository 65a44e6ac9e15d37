"""tests/ mirrors src/phiscale/: each source module with logic has its test module at the mirrored path
(`models/scaling.py` -> `tests/models/test_scaling.py`, a package's `__init__.py` -> `test_init.py`).

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
