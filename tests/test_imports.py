"""The import graph of src/restorebench, read with `ast` (nothing is imported): no module reaches itself
through its imports, counting imports inside functions (restorebench.codepath follows those too, so a cycle
makes every stage that runs one module depend on all the others), and imports go down the layers of
docs/ARCHITECTURE.md, never up."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# The layers of docs/ARCHITECTURE.md, bottom first, by top-level module or folder under restorebench/ ("" is
# the package itself), or by a dotted module inside a folder where that module belongs higher than its folder
# (the most specific entry wins). A module may import its own layer and the layers below it, never one above.
# degrade.stage is the degrade stage: it reads manifests and writes a store (the data layer), while the data
# readers import the degradations it records, so the rest of degrade/ stays below data.
LAYERS = (
    ("base", {"", "errors", "io", "logs", "lock", "codepath", "bounds", "images", "card", "metrics"}),
    ("models and degradations", {"models", "degrade"}),
    ("params", {"schema", "config"}),
    ("data", {"data", "degrade.stage"}),
    ("evaluation", {"infer", "evaluate"}),
    ("training", {"train", "estimate", "costs"}),
    ("pretraining", {"pretrain"}),
    ("results and tools", {"aggregate", "figures", "report", "restore", "doctor"}),
    ("grid and entry points", {"pipeline", "views", "dvcyaml", "snakemake_config", "plan", "cli", "cli_support",
                               "__main__"}),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """restorebench module -> the restorebench modules it imports anywhere in its file (relative imports
    resolved; `from a import b` counts as importing a.b when b is a module, else a)."""
    files = {module_name(p): p for p in SRC.joinpath("restorebench").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            found |= {t for t in targets if t in files and t != name}
        graph[name] = found
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None (depth-first search with three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_through_a_lazy_import(tmp_path, monkeypatch):
    pkg = tmp_path / "restorebench"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from restorebench import b\n")
    (pkg / "b.py").write_text("def f():\n    from . import c\n")
    (pkg / "c.py").write_text("import restorebench.a\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    graph = import_graph()
    assert graph["restorebench.b"] == {"restorebench.c"}
    assert find_cycle(graph) == ["restorebench.a", "restorebench.b", "restorebench.c", "restorebench.a"]


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "restorebench.pretrain.runner" in graph["restorebench.pretrain.dcpt"]  # the graph sees real edges
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def layer(module: str) -> int:
    """The index in LAYERS of `module` (restorebench.a.b...): its most specific entry, a.b before a."""
    parts = module.split(".")[1:]
    for n in range(len(parts), 0 if parts else -1, -1):  # "" is the package itself, no module's fallback
        unit = ".".join(parts[:n])
        found = [i for i, (_, units) in enumerate(LAYERS) if unit in units]
        if found:
            return found[0]
    raise AssertionError(f"{module}: in no layer of LAYERS; add its folder or module to one (and to "
                         "docs/ARCHITECTURE.md)")


def test_a_module_named_in_a_layer_outranks_its_folder():
    assert LAYERS[layer("restorebench.degrade.stage")][0] == "data"
    assert LAYERS[layer("restorebench.degrade.chain")][0] == "models and degradations"
    assert LAYERS[layer("restorebench")][0] == "base"
    with pytest.raises(AssertionError, match="restorebench.newthing: in no layer"):
        layer("restorebench.newthing")


def test_imports_go_down_the_layers():
    upward = sorted(f"{a} ({LAYERS[layer(a)][0]}) imports {b} ({LAYERS[layer(b)][0]})"
                    for a, deps in import_graph().items() for b in deps if layer(b) > layer(a))  # fmt: skip
    assert not upward, "\n".join(upward)


def test_the_params_and_grid_modules_load_without_torch():
    """The Snakefile and `restorebench pipeline` read the grid and the params without paying for torch."""
    code = ("import sys, restorebench.schema, restorebench.config, restorebench.pipeline, restorebench.views; "
            "print(sorted(m for m in ('torch', 'transformers', 'timm') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(("rule", "own", "other"), [
    ("pretrain_dcpt", "src/restorebench/pretrain/dcpt.py", "src/restorebench/pretrain/ipt.py"),
    ("pretrain_ipt", "src/restorebench/pretrain/ipt.py", "src/restorebench/pretrain/dcpt.py"),
])  # fmt: skip
def test_a_pretraining_stage_depends_on_its_own_method_only(rule, own, other):
    """Editing IPT's files puts no DCPT stage out of date (and the reverse)."""
    from restorebench.pipeline import stage_sources

    model = "nafnet" if rule == "pretrain_dcpt" else "ipt"
    files = stage_sources(rule, model)
    assert own in files and "src/restorebench/pretrain/runner.py" in files
    assert other not in files
    if rule == "pretrain_dcpt":
        assert "src/restorebench/models/ipt.py" not in files and "src/restorebench/models/nafnet.py" in files
