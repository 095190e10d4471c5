"""The source files a module runs: its import closure within cnnscope, found by reading the code.

The workflow makes these files each step's inputs, so editing any module a step imports (directly or
not, at the top or inside a function) reruns that step and everything downstream, and nothing else.
Imports are read with :mod:`ast`, not executed, so the closure is found without importing torch.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import cnnscope

PACKAGE = cnnscope.__name__
ROOT = Path(cnnscope.__file__).resolve().parent  # the directory of the cnnscope package


def module_file(module: str) -> Path | None:
    """The file of a cnnscope module or package (``None`` for anything else)."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = ROOT.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _parents(module: str) -> list[str]:
    """The packages Python imports before ``module``: ``a.b.c`` -> ``a``, ``a.b``."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@cache
def _direct_imports(module: str) -> frozenset[str]:
    """The cnnscope modules ``module``'s code imports anywhere in it, with their parent packages."""
    path = module_file(module)
    if path is None:
        return frozenset()
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            # `from pkg import name` imports the submodule pkg.name when there is one
            found.update(f"{base}.{alias.name}" for alias in node.names)
    names = {m for m in found if module_file(m) is not None}
    return frozenset(names | {p for m in names for p in _parents(m)})


def closure(module: str) -> list[Path]:
    """Every cnnscope source file that importing (and running) ``module`` may execute, sorted."""
    seen: set[str] = set()
    todo = [module, *_parents(module)]
    while todo:
        m = todo.pop()
        if m in seen or module_file(m) is None:
            continue
        seen.add(m)
        todo.extend(_direct_imports(m))
    return sorted(p for p in (module_file(m) for m in seen) if p is not None)
