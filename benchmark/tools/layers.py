"""The package's import layering, checked:

    python -m benchmark.tools.layers      # one line per problem; exit 1 if there is any

The packages form a stack; a module imports from its own package and from the packages below it,
never from one above (a function-level import counts as much as one at the top):

    errors < utils < data, models < training < methods, downstream < stages < experiments
           < report < driver < tools < the command modules (benchmark/run.py, benchmark/pretrain.py, ...)

Inside ``stages/`` a stage imports only the shared ``kinds``, ``cli`` and ``cost``, never another
stage; ``catalogue`` imports them all (the driver and the report read the table through it). No
module imports itself back through others (no import circle), and none is over 500 lines.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
MAX_LINES = 500

# Level of each package (and of the package's own __init__ and errors.py): a module may import
# from its own package and from packages of a lower level.
LEVELS: dict[str, int] = {
    "": 0, "errors": 0,
    "utils": 1,
    "data": 2, "models": 2,
    "training": 3,
    "methods": 4, "downstream": 4,
    "stages": 5,
    "experiments": 6,
    "report": 7,
    "driver": 8,
    "tools": 9,
}
COMMANDS = 10  # the top-level command modules (python -m benchmark.<name>)
STAGES_SHARED = {"kinds", "cli", "cost"}
STAGES_CATALOGUE = "catalogue"


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module under ``root`` (a package directory)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in its body (``from P import m``
    counts as importing the module ``P.m`` where that is one, else ``P``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def level(name: str, modules: dict[str, Path]) -> tuple[int, str]:
    """(level, package) of a module: ``benchmark.stages.probe`` -> (5, "stages")."""
    parts = name.split(".")[1:]
    if not parts:
        return LEVELS[""], ""
    if len(parts) == 1 and modules[name].name != "__init__.py":
        return (LEVELS[parts[0]], parts[0]) if parts[0] in LEVELS else (COMMANDS, "commands")
    if parts[0] not in LEVELS:
        raise KeyError(f"package {parts[0]!r} has no level in benchmark.tools.layers.LEVELS")
    return LEVELS[parts[0]], parts[0]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: every strongly connected set of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:  # iterative Tarjan would be longer; the package is shallow
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def problems(root: Path = PACKAGE) -> Iterator[str]:
    """Every breach of the layering under ``root``, one line each."""
    modules = module_names(root)
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    for name, targets in sorted(graph.items()):
        mine, package = level(name, modules)
        for target in sorted(targets):
            theirs, other = level(target, modules)
            if other != package and theirs >= mine:
                yield f"{name} imports {target}: {other or 'benchmark'} is not below {package or 'benchmark'}"
            if package == "stages" and other == "stages" and name.count(".") == 2 and target.count(".") == 2:
                leaf, imported = name.rsplit(".", 1)[1], target.rsplit(".", 1)[1]
                if leaf != STAGES_CATALOGUE and imported not in STAGES_SHARED:
                    yield f"{name} imports {target}: a stage imports only {sorted(STAGES_SHARED)} of stages/"
    for group in cycles(graph):
        yield f"import circle: {' -> '.join(group)}"
    for name, path in sorted(modules.items()):
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES:
            yield f"{name}: {lines} lines (at most {MAX_LINES})"


def main() -> int:
    found = list(problems())
    for line in found:
        print(line)
    print(f"{len(found)} problems" if found else "the layering holds", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
