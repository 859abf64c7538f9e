"""Layering: the model's parts (strategies, models, callbacks) never import the model or the CLI above them."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "lit_transfer"
PARTS = ("strategies", "models", "callbacks")
ABOVE = ("lit_transfer.module", "lit_transfer.cli")


def imported_modules(path: Path, root: Path = PACKAGE.parent) -> set[str]:
    """Every module an ``import`` statement of ``path`` names (module level and inside functions); relative
    imports resolved against the file's package (its folders under ``root``)."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return names


def test_the_walker_sees_function_level_and_relative_imports(tmp_path):
    path = tmp_path / "lit_transfer" / "strategies" / "probe.py"
    path.parent.mkdir(parents=True)
    path.write_text("def f():\n    from ..module import TransferClassifier\n    import lit_transfer.cli\n")
    assert {"lit_transfer.module", "lit_transfer.cli"} <= imported_modules(path, root=tmp_path)


def test_strategies_models_and_callbacks_import_neither_the_module_nor_the_cli():
    offenders = []
    for part in PARTS:
        for path in sorted((PACKAGE / part).rglob("*.py")):
            for name in imported_modules(path):
                if any(name == above or name.startswith(f"{above}.") for above in ABOVE):
                    offenders.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert not offenders, "\n".join(offenders)
