"""Which source files a command runs: a restorebench module and every restorebench module it imports,
transitively (imports inside functions and relative imports too), read from the source with `ast` (nothing
is imported). restorebench.pipeline lists these files as each stage's code dependencies."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def _module_file(module: str) -> Path | None:
    """restorebench.<module> -> its file, or None when it is no module of the package."""
    base = PACKAGE.joinpath(*module.split(".")) if module else PACKAGE
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(path: Path) -> set[str]:
    """The restorebench modules `path` imports (anywhere in the file, relative imports too), relative to
    the package."""
    here = ["restorebench", *path.relative_to(PACKAGE).with_suffix("").parts]
    package = here if path.name == "__init__.py" else here[:-1]
    package = package[:-1] if package[-1:] == ["__init__"] else package
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] if node.level else [])
            module = ".".join(p for p in (base, node.module or "") if p)
            names = [module] + [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name == "restorebench" or name.startswith("restorebench."):
                mod = name.removeprefix("restorebench").lstrip(".")
                if _module_file(mod) is not None:
                    found.add(mod)
    return found


def source_files(modules: Iterable[str], *, follow: bool = True) -> list[str]:
    """The files of `modules` and (follow) every restorebench module they import, transitively, as paths
    from the project root (src/restorebench/...), sorted."""
    todo, seen = list(modules), set()
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        path = _module_file(mod)
        if path is None:
            raise ValueError(f"restorebench.{mod}: no such module ")
        parts = mod.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b runs a/__init__.py
        if follow:
            todo += sorted(_imports(path) - seen)
    root = PACKAGE.parent.parent
    files = {_module_file(m) for m in seen}
    if "" in seen:  # restorebench/__init__.py: imported by every module, empty; not a dependency
        files.discard(_module_file(""))
    return sorted(str(f.relative_to(root)) for f in files if f is not None)
