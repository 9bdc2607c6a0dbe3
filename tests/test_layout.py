"""The architecture's rules, read from the source tree itself (docs/architecture.md draws them).

Dependencies point one way: routers import no other router, bench (and the harness it shares with the
tests) imports nothing from tests, the library imports neither the service nor training. Files stay
under 400 lines and functions under 60 in the product packages. The docs name only modules, definitions
and files that exist. Each rule is a function over a folder, so the last test can show that each one
fails on a tree that breaks it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PRODUCT = ("bonds", "training", "service", "bench")
PACKAGES = (*PRODUCT, "harness", "tests")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


def python_files(root: Path, package: str) -> list[Path]:
    files = sorted((root / package).rglob("*.py"))
    assert files, f"no Python files under {root / package}"
    return files


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(root: Path, path: Path) -> set[str]:
    """Every module `path` imports, anywhere in the file (function-level imports too), relative ones resolved.

    `from a.b import c` counts as both `a.b` and `a.b.c`: c may be a module.
    """
    package = module_name(root, path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def routers_importing_routers(root: Path) -> list[str]:
    routers = {module_name(root, p) for p in python_files(root, "service/routers") if p.name != "__init__.py"}
    bad = []
    for path in python_files(root, "service/routers"):
        me = module_name(root, path)
        if path.name == "__init__.py":
            continue
        others = sorted(m for m in imported_modules(root, path) if m in routers and m != me)
        bad += [f"{me} imports {other}" for other in others]
    return bad


def imports_from(root: Path, package: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in python_files(root, package):
        for module in sorted(imported_modules(root, path)):
            if any(within(module, f) for f in forbidden):
                bad.append(f"{path.relative_to(root)} imports {module}")
    return bad


def long_files(root: Path, packages: tuple[str, ...], limit: int = MAX_FILE_LINES) -> list[str]:
    return [f"{path.relative_to(root)}: {n} lines" for package in packages for path in python_files(root, package)
            if (n := len(path.read_text().splitlines())) > limit]


def long_functions(root: Path, packages: tuple[str, ...], limit: int = MAX_FUNCTION_LINES) -> list[str]:
    bad = []
    for package in packages:
        for path in python_files(root, package):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    n = node.end_lineno - node.lineno + 1
                    if n > limit:
                        bad.append(f"{path.relative_to(root)}:{node.lineno} {node.name}: {n} lines")
    return bad


def test_no_router_imports_another_router():
    assert routers_importing_routers(REPO) == []


def test_bench_and_its_harness_import_nothing_from_tests():
    assert imports_from(REPO, "bench", ("tests",)) == []
    assert imports_from(REPO, "harness", ("tests",)) == []


def test_the_library_imports_neither_the_service_nor_training():
    assert imports_from(REPO, "bonds", ("service", "training")) == []


def test_training_does_not_import_the_service():
    assert imports_from(REPO, "training", ("service",)) == []


def test_no_file_over_400_lines():
    assert long_files(REPO, PRODUCT) == []


def test_no_function_over_60_lines():
    assert long_functions(REPO, PRODUCT) == []


def defined_names(tree: ast.AST) -> set[str]:
    """Names a module (or a class body) defines at its own level: functions, classes, assignments."""
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def unresolved_names(root: Path, doc: Path) -> list[str]:
    """The dotted names (`service.index.search.rerank`) and paths (`bonds/bond.py`) in `doc`'s code spans
    that name no module, definition or file of the tree."""
    bad = []
    text = re.sub(r"^```.*?^```", "", doc.read_text(), flags=re.S | re.M)  # code blocks are not names
    for span in sorted(set(re.findall(r"`([^`]+)`", text))):
        span = span.split("(")[0]
        if "<" in span or "*" in span or " " in span:
            continue
        if "/" in span:
            if span.split("/")[0] in PACKAGES and not (root / span).exists():
                bad.append(span)
            continue
        parts = span.split(".")
        if parts[0] not in PACKAGES or len(parts) < 2:
            continue
        at = next((i for i in range(len(parts), 0, -1) if (root / Path(*parts[:i])).with_suffix(".py").is_file()
                   or (root / Path(*parts[:i]) / "__init__.py").is_file()), 0)
        module = root / Path(*parts[:at])
        path = module.with_suffix(".py") if module.with_suffix(".py").is_file() else module / "__init__.py"
        scope: ast.AST = ast.parse(path.read_text())
        for name in parts[at:]:
            found = [n for n in scope.body if isinstance(n, ast.ClassDef) and n.name == name]
            if name not in defined_names(scope):
                bad.append(span)
                break
            if not found:
                if name != parts[-1]:
                    bad.append(span)
                break
            scope = found[0]
    return bad


PAGES = ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").rglob("*.md"))]


@pytest.mark.parametrize("page", PAGES)
def test_the_docs_name_only_what_exists(page):
    """A module, definition or file that moves or is renamed takes its mentions in the docs with it."""
    assert unresolved_names(REPO, REPO / page) == []


@pytest.fixture
def broken_tree(tmp_path: Path) -> Path:
    """A tree that breaks every rule once."""
    files = {
        "service/routers/__init__.py": "",
        "service/routers/a.py": "from service.routers import b\n",
        "service/routers/b.py": "def f():\n    from .a import router\n",
        "service/routers/c.py": "from service.collections import build\n",
        "bench/x.py": "def run():\n    import tests.e2e.server\n",
        "bonds/y.py": "from service.app import create_app\n" + "\n" * MAX_FILE_LINES,
        "training/z.py": "def long():\n" + "    pass\n" * MAX_FUNCTION_LINES,
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_each_rule_fails_on_a_tree_that_breaks_it(broken_tree):
    assert routers_importing_routers(broken_tree) == ["service.routers.a imports service.routers.b",
                                                      "service.routers.b imports service.routers.a"]
    assert imports_from(broken_tree, "bench", ("tests",)) == ["bench/x.py imports tests.e2e.server"]
    assert imports_from(broken_tree, "bonds", ("service", "training")) == [
        "bonds/y.py imports service.app", "bonds/y.py imports service.app.create_app"]
    assert long_files(broken_tree, ("bonds",)) == [f"bonds/y.py: {MAX_FILE_LINES + 1} lines"]
    assert long_functions(broken_tree, ("training",)) == [f"training/z.py:1 long: {MAX_FUNCTION_LINES + 1} lines"]
    doc = broken_tree / "page.md"
    doc.write_text("```\nA --> B\n```\n`bonds.y` `bonds.y.gone` `bonds/y.py` `bonds/gone.py`\n"
                   "`service.routers.a.Missing.method`")
    assert unresolved_names(broken_tree, doc) == ["bonds.y.gone", "bonds/gone.py", "service.routers.a.Missing.method"]
