"""The layout's promises: the runtime and the nodes never import the tooling, and no engine module imports itself
back through others (no import circle), so each role can be read, tested and replaced on its own."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENGINE = REPO / "fusionframes"
#: what users' runs load; the tooling (bench, estimates, training, parity, demo models) stays out of it
RUNTIME_PARTS = ("models", "sampling", "runtime", "io", "releases.py", "errors.py")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved); with ``top_level_only`` only the
    imports that run when the module loads (not inside functions or ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    nodes = list(ast.walk(tree))
    if top_level_only:  # what runs at import, ``if TYPE_CHECKING:`` blocks included (a circle all the same)
        nodes = [n for top in tree.body for n in ([top] if not isinstance(top, ast.If) else top.body)]
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            if node.module is None or node.level:
                names.update(f"{module}.{alias.name}" for alias in node.names)
            names.add(module)
    return {name.replace("nodes.fusionframes", "fusionframes", 1) for name in names}


def _engine_modules() -> dict[str, Path]:
    return {_module_name(path): path for path in ENGINE.rglob("*.py")}


def test_runtime_and_nodes_never_import_the_tooling():
    files = [p for part in RUNTIME_PARTS for p in ((ENGINE / part).rglob("*.py") if (ENGINE / part).is_dir()
                                                    else [ENGINE / part])]
    files += list((REPO / "nodes").rglob("*.py"))
    assert len(files) > 30
    offenders = {str(p.relative_to(REPO)): sorted(n for n in _imports(p) if n.startswith("fusionframes.tools"))
                 for p in files}
    assert not {k: v for k, v in offenders.items() if v}


def test_no_import_circle_in_the_engine():
    modules = _engine_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path, top_level_only=True):
            while imported and imported not in modules:  # "pkg.mod.Name" -> "pkg.mod"
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(f"{imported}."):  # a package's own __init__
                targets.add(imported)
        graph[name] = targets
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in graph[node]:
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, " ; ".join(" -> ".join(cycle) for cycle in cycles)


def test_scripts_never_import_the_tests():
    for path in (REPO / "scripts").glob("*.py"):
        assert not any(name == "tests" or name.startswith("tests.") for name in _imports(path)), path.name


def test_the_readmes_layout_names_only_what_exists():
    text = (REPO / "README.md").read_text()
    block = text[text.index("## Layout"):]
    block = block[block.index("```") + 3:]
    block = block[:block.index("```")]
    names = set(re.findall(r"[A-Za-z_][\w]*(?:\.py|\.md|/)", block))
    assert len(names) > 30
    everything = {p.name for p in REPO.rglob("*") if ".venv" not in p.parts and ".host" not in p.parts}
    missing = sorted(n for n in names if n.rstrip("/") not in everything)
    assert not missing, f"README layout names what is not in the tree: {missing}"
