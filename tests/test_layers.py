"""The package is built in floors: every import inside zkernels (at module level or inside a function) goes
to a lower floor, or stays inside its own package (cli/, serve/, ray/, binary/, kernels/), and no import
chain comes back to where it started. The README's "How it works" lists the same floors, top first."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "zkernels"

# The C++ extensions setup.py builds (compiled modules: no .py file to find)
EXTENSIONS = ["_hamming", "_cpu_ops"]

# Top first. A module may import modules of lower floors only (or of its own package).
FLOORS = [
    ["__main__"],
    ["cli"],
    ["serve", "ray"],
    ["demo_models"],  # beside the path: the demo models,
    ["random_checkpoints"],  # tiny random checkpoints (and random-weight Rerankers for the benchmarks),
    ["pipeline"],
    ["reranker", "embedder"],
    ["reference", "qwen_vocab"],  # the recipes through transformers, Qwen's tokenizer offline
    ["formats", "declared", "projections", "ranking", "binary", "calibration", "agreement"],
    ["scoring"],
    ["model", "quantization"],
    ["loading", "packing"],
    ["kernels"],
    ["options", "config", "paths", *EXTENSIONS],
]
FLOOR = {name: i for i, names in enumerate(FLOORS) for name in names}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path = ROOT) -> list[tuple[str, int, bool]]:
    """(imported module of the package, line, at module level) for every import statement in the file, at
    any depth: module level, inside a function or a class, under `if TYPE_CHECKING`."""
    this = module_name(path, root).split(".")
    top_package = this[0]
    package = this if path.name == "__init__.py" else this[:-1]
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            # `from . import x` / `from .pkg import sub` import submodules: name them, not the package
            targets = [f"{module}.{a.name}" if _is_module(f"{module}.{a.name}", root) else module
                       for a in node.names]
        else:
            continue
        found += [(t, node.lineno, id(node) in top_level) for t in targets if t.split(".")[0] == top_package]
    return found


def _is_module(name: str, root: Path = ROOT) -> bool:
    path = root.joinpath(*name.split("."))
    is_extension = name.split(".", 1)[-1] in EXTENSIONS
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file() or is_extension


def floor_of(module: str) -> tuple[str, int]:
    parts = module.split(".")
    if len(parts) < 2:
        return "zkernels", -1  # the package's own __init__: the public face, imported by users only
    return parts[1], FLOOR[parts[1]]


def graph(package: Path = PACKAGE) -> dict[str, list[tuple[str, int, bool]]]:
    root = package.parent
    return {module_name(p, root): imports_of(p, root) for p in sorted(package.rglob("*.py"))}


def test_every_module_has_a_floor():
    tops = {module_name(p).split(".")[1] for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or
            p.parent != PACKAGE}
    assert tops <= set(FLOOR), f"give these a floor in FLOORS: {sorted(tops - set(FLOOR))}"


def test_imports_only_go_down():
    upward = []
    for module, imports in graph().items():
        name, floor = floor_of(module)
        for target, line, _ in imports:
            target_name, target_floor = floor_of(target)
            if target_name == name and floor >= 0:
                continue  # inside its own package or module
            if not target_floor > floor:
                upward.append(f"{module}:{line} imports {target} (floor {floor} -> {target_floor})")
    assert not upward, "\n".join(upward)


def import_cycles(package: Path = PACKAGE) -> list[list[str]]:
    """Every import chain that comes back to where it started, counting imports at every level: a
    function's import is a dependency too (a circle through it is still a circle, only a lazier one)."""
    edges = {m: sorted({t for t, _, _ in imports if t != m}) for m, imports in graph(package).items()}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in edges.get(m, []):
            if state.get(t) == "open":
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in edges:
        if m not in state:
            visit(m)
    return cycles


def test_no_import_cycle():
    cycles = import_cycles()
    assert not cycles, cycles


def _write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root.joinpath(*name.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_a_circle_through_a_function_level_import_is_found(tmp_path):
    package = _write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/sub/__init__.py": "",
        "pkg/sub/writer.py": "from .encoding import encode\n\n\ndef write():\n    return encode()\n",
        "pkg/sub/encoding.py": "def encode():\n    from .writer import write\n    return write\n",
    })
    assert import_cycles(package) == [["pkg.sub.encoding", "pkg.sub.writer", "pkg.sub.encoding"]]


def test_a_package_without_a_circle_has_none(tmp_path):
    package = _write_package(tmp_path, {
        "pkg/__init__.py": "from .sub import writer\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/writer.py": "def write():\n    from .encoding import encode\n    return encode()\n",
        "pkg/sub/encoding.py": "def encode():\n    return 1\n",
    })
    assert import_cycles(package) == []


def test_readme_lists_the_floors_top_first():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## How it works"):]
    section = section[:section.index("\n## ", 1)]
    items = re.findall(r"^\d+\. (.*(?:\n(?!\d+\. ).*)*)", section, re.M)
    assert len(items) >= 8
    floors = []
    for item in items:
        bold = re.match(r"\*\*(.*?)\*\*", item)
        named = [n for n in re.findall(r"`(?:zkernels/)?([a-z_]+)(?:\.py|/)`", bold.group(1) if bold else "")
                 if n in FLOOR]
        assert named, f"an item does not start with its modules in bold: {item[:80]!r}"
        floors.append([FLOOR[n] for n in named])
    flat = [f for group in floors for f in group]
    assert flat == sorted(flat), f"README floors out of order: {floors}"
    listed = set(re.findall(r"`(?:zkernels/)?([a-z_]+)(?:\.py|/)`", section))
    missing = {n for n in FLOOR if n not in ("__main__", *EXTENSIONS)} - listed
    assert not missing, f"the README's How it works does not mention {sorted(missing)}"
