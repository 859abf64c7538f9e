"""The package's shape (issue 23): the command line is read in one place, ``model.weights`` parsed in one place,
the headline metric and the ok-status rule defined once, modules and classes small, no upward imports.

Each check walks the package's AST, so a new module that breaks a rule fails here, named."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lit_transfer"
PLAN = PACKAGE / "plan"
MAX_MODULE_LINES = 450
MAX_CLASS_LINES = 250


def _modules() -> dict[str, ast.Module]:
    return {str(p.relative_to(PACKAGE.parent)): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _outside(*allowed: Path):
    allowed_names = {str(a.relative_to(PACKAGE.parent)) for a in allowed}
    for name, tree in MODULES.items():
        if not any(name == a or name.startswith(a.rstrip("/") + "/") for a in allowed_names):
            yield name, tree


def _str(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _strings(node) -> list[str]:
    """The string constants of a constant or a tuple/list/set of them."""
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [s for e in node.elts if (s := _str(e)) is not None]
    s = _str(node)
    return [] if s is None else [s]


def argv_reads(tree: ast.Module) -> list[str]:
    """``sys.argv`` reads and argv scans: ``x.startswith("--...")``, ``x == "--..."``, ``x in ("--config", ...)``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "argv" and isinstance(node.value, ast.Name) \
                and node.value.id == "sys":
            found.append(f"sys.argv at line {node.lineno}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in ("startswith", "endswith") and node.args:
            if any(s.startswith("-") for s in _strings(node.args[0])):
                found.append(f"{node.func.attr}({ast.unparse(node.args[0])}) at line {node.lineno}")
        elif isinstance(node, ast.Compare):
            for part in (node.left, *node.comparators):
                if any(s.startswith("--") or s in ("-c",) for s in _strings(part)):
                    found.append(f"{ast.unparse(node)} at line {node.lineno}")
                    break
    return found


def test_no_module_outside_the_plan_reads_or_scans_the_command_line():
    bad = {name: found for name, tree in _outside(PLAN) if (found := argv_reads(tree))}
    assert bad == {}


def test_the_argv_check_catches_each_kind_of_scan():
    for source in ("import sys\nx = sys.argv[1:]", "ok = any(a.startswith('--run.dir') for a in args)",
                   "if arg == '--config': pass", "if arg in ('--config', '-c'): pass"):
        assert argv_reads(ast.parse(source)), source
    assert argv_reads(ast.parse("cmd = ['--run.dir', str(d)]\nflag = f'--{k}={v}'")) == []  # building is fine


WEIGHT_WORDS = ("pretrained", "hub", "imagenet", "source", ".ckpt")


def weights_decoding(tree: ast.Module) -> list[str]:
    """Comparisons of a ``weights`` value with a weights keyword (``weights == "source"``, ``w in (None,
    "pretrained")``, ``weights.lower() in HUB``) and suffix checks for ``.ckpt``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            names = {n.attr if isinstance(n, ast.Attribute) else getattr(n, "id", None)
                     for part in (node.left, *node.comparators) for n in ast.walk(part)}
            words = [s for part in (node.left, *node.comparators) for s in _strings(part)]
            if any("weights" in str(n) for n in names) and any(w in WEIGHT_WORDS for w in words):
                found.append(f"{ast.unparse(node)} at line {node.lineno}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "endswith" \
                and node.args and ".ckpt" in _strings(node.args[0]):
            found.append(f"{ast.unparse(node)} at line {node.lineno}")
        elif isinstance(node, ast.Name) and node.id in ("HUB_WEIGHTS", "HUB_WORDS"):
            found.append(f"{node.id} at line {node.lineno}")
    return found


def test_model_weights_are_parsed_in_one_place():
    bad = {name: found for name, tree in _outside(PLAN / "weights.py") if (found := weights_decoding(tree))}
    assert bad == {}
    assert weights_decoding(ast.parse("if cfg.model.weights == 'source': pass"))
    assert weights_decoding(ast.parse("if weights in (None, 'pretrained'): pass"))


def test_the_headline_metric_and_the_ok_rule_are_defined_once():
    results = PACKAGE / "results.py"
    literal, status_rule = {}, {}
    for name, tree in _outside(results):
        for node in ast.walk(tree):
            if _str(node) == "target/test_acc":
                literal.setdefault(name, []).append(node.lineno)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                    and len(node.args) == 2 and [_str(a) for a in node.args] == ["status", "ok"]:
                status_rule.setdefault(name, []).append(node.lineno)
    assert literal == {} and status_rule == {}


def test_modules_and_classes_are_small():
    too_long = {}
    for name, tree in MODULES.items():
        lines = len((PACKAGE.parent / name).read_text().splitlines())
        if lines >= MAX_MODULE_LINES:
            too_long[name] = lines
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 >= MAX_CLASS_LINES:
                too_long[f"{name}:{node.name}"] = node.end_lineno - node.lineno + 1
    assert too_long == {}


@pytest.mark.parametrize("low", ["strategies", "models", "callbacks", "data", "plan"])
def test_lower_layers_never_import_the_module_or_the_cli(low):
    from test_imports import import_graph

    graph = import_graph()
    up = {"lit_transfer.module", "lit_transfer.cli", "lit_transfer.entry"}
    bad = {name: sorted(edges & up) for name, edges in graph.items()
           if (name == f"lit_transfer.{low}" or name.startswith(f"lit_transfer.{low}.")) and edges & up}
    assert bad == {}
