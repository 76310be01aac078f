"""Which source files a command runs: a restorebench module and every restorebench module it imports,
transitively (imports inside functions and relative imports too), read from the source with `ast` (nothing
is imported). restorebench.pipeline lists these files as each stage's code dependencies."""

from __future__ import annotations

import ast
import functools
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


@functools.cache  # a file's imports, read once per process
def _imports(path: Path) -> frozenset[str]:
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
    return frozenset(found)


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


def _function_imports(tree: ast.Module) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Per module-level function of a module: the restorebench modules imported in its body, and the
    module-level functions it calls by name."""
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    imports: dict[str, set[str]] = {}
    calls: dict[str, set[str]] = {}
    for name, fn in functions.items():
        found, called = set(), set()
        for node in ast.walk(fn):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in functions:
                called.add(node.func.id)  # a call of a cli.py helper (not a parameter sharing a command's name)
                continue
            else:
                continue
            for full in names:
                mod = full.removeprefix("restorebench").lstrip(".")
                if full.startswith("restorebench") and mod and _module_file(mod) is not None:
                    found.add(mod)
        imports[name], calls[name] = found, called
    return imports, calls


@functools.cache
def command_modules(command: str | None, cli: str = "cli") -> tuple[str, ...]:
    """The restorebench modules the CLI command `command` imports: the ones imported inside its function and
    inside the cli.py helpers it calls (transitively). None: what every command runs, cli.py's module-level
    imports and the ones inside its callback (`main`). Read from cli.py's source, so the entry points of each
    stage are derived, never copied by hand."""
    path = _module_file(cli)
    assert path is not None
    tree = ast.parse(path.read_text())
    imports, calls = _function_imports(tree)
    if command is None:
        top = set()
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("restorebench"):
                for a in node.names:
                    mod = f"{node.module}.{a.name}".removeprefix("restorebench").lstrip(".")
                    base = node.module.removeprefix("restorebench").lstrip(".")
                    top.add(mod if _module_file(mod) is not None else base)
        return tuple(sorted(m for m in top | imports.get("main", set()) if m))
    commands = {fn.name: fn for fn in tree.body if isinstance(fn, ast.FunctionDef)}
    if command not in commands:
        raise ValueError(f"{cli}.py has no command function {command!r}")
    todo, seen, found = [command], set(), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        found |= imports[name]
        todo += sorted(calls[name] - seen - {"main"})
    return tuple(sorted(found))


@functools.cache
def module_constant(module: str, name: str, default: object = None) -> object:
    """The literal value assigned to `name` at the top level of restorebench.<module>, read from its source
    (the module is not imported: a model's file imports torch, the grid must not)."""
    path = _module_file(module)
    if path is None:
        raise ValueError(f"restorebench.{module}: no such module")
    for node in ast.parse(path.read_text()).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets) and node.value is not None:
            return ast.literal_eval(node.value)
    return default
