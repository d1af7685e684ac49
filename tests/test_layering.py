"""Dependencies point one way (ARCHITECTURE.md, "Layers"): every import in the package, at module
level or inside a function, is read from the source and checked against the layers; so are
import cycles, recipes that import each other, and private names used across modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "t2i"

# lowest first: a module may import its own layer and the layers before it
LAYERS = ["models", "core", "data", "generation", "evaluation", "training", "server", "cli"]
CORE = {
    "schedules",
    "samplers",
    "denoisers",
    "guidance",
    "prompts",
    "images",
    "checkpoint",
    "argtypes",
    "likelihood",
    "a1111",  # A1111's sampler names and PNG parameters text: formats, no t2i imports
}
GENERATION = {
    "params",
    "protocol",
    "editing",
    "pipeline",
    "cascade",
    "token_pipeline",
    "draw_pipeline",
    "gan_pipeline",
    "unclip_pipeline",
    "wuerstchen_pipeline",
    "families",
    "interpolate",
    "generate",
    "restyle",
    "variations",
}
ENTRY_POINTS = {"t2i.cli", "t2i.__main__", "t2i.training.__main__"}
# the training modules every recipe shares; every other module of t2i/training is a recipe
TRAINING_SHARED = {"__init__", "loop", "state", "config", "data", "dist", "export", "cli"}
TRAINING_SHARED |= {"common", "presets", "log", "__main__", "grids", "run_config"}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    """The layer of a t2i module; None for the package itself (constants and a lazy `load`)."""
    parts = module.split(".")
    if module == "t2i":
        return None
    if module in ENTRY_POINTS or parts[-1] == "cli":
        return "cli"
    top = parts[1]
    if top in ("models", "data", "evaluation", "training", "server"):
        return top
    if top in CORE:
        return "core"
    if top in GENERATION or top in ("adapters", "guides"):  # below the pipeline, which uses them
        return "generation"
    raise AssertionError(f"{module} is in no layer: add it to tests/test_layering.py")


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, module: str) -> list[tuple[str, list[str], int]]:
    """(imported t2i module, names taken from it, line) for every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "t2i":
                    found.append((alias.name, [], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            if base.split(".")[0] == "t2i":
                found.append((base, [a.name for a in node.names], node.lineno))
    return found


def resolve(target: str, names: list[str], known: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """`from t2i.data import shapes` imports the module t2i.data.shapes, not a name."""
    out = [(target, [n for n in names if f"{target}.{n}" not in known])]
    out += [(f"{target}.{n}", []) for n in names if f"{target}.{n}" in known]
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, list[tuple[str, list[str], int]]]:
    known = modules()
    edges = {}
    for module, path in known.items():
        edges[module] = [
            (resolved, taken, line)
            for target, names, line in imports_of(path, module)
            for resolved, taken in resolve(target, names, known)
            if resolved != module
        ]
    return edges


def test_every_import_points_down_the_layers(graph):
    wrong = []
    for module, edges in graph.items():
        here = layer_of(module)
        for target, _, line in edges:
            there = layer_of(target)
            if here is None or there is None:
                continue
            if LAYERS.index(there) > LAYERS.index(here):
                wrong.append(f"{module}:{line} ({here}) imports {target} ({there})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_only_entry_points_import_the_command_line(graph):
    wrong = [
        f"{module}:{line} imports {target}"
        for module, edges in graph.items()
        for target, _, line in edges
        if target == "t2i.cli" and module not in ENTRY_POINTS
    ]
    assert not wrong, "\n".join(wrong)


def test_models_import_only_models(graph):
    wrong = [
        f"{module}:{line} imports {target}"
        for module, edges in graph.items()
        if module.startswith("t2i.models")
        for target, _, line in edges
        if not target.startswith("t2i.models")
    ]
    assert not wrong, "\n".join(wrong)


def owner(module: str, recipes: set[str]) -> str:
    """The recipe a module belongs to: diffusion_config and diffusion_init are the diffusion
    recipe's (the shortest recipe name it is, or starts with followed by "_")."""
    name = module.split(".")[-1]
    mine = [r.split(".")[-1] for r in recipes]
    return min((r for r in mine if name == r or name.startswith(r + "_")), key=len)


def test_no_recipe_imports_another_and_the_loop_imports_none(graph):
    recipes = {
        m
        for m in graph
        if m.startswith("t2i.training.") and m.split(".")[-1] not in TRAINING_SHARED
    }
    assert {"t2i.training.diffusion", "t2i.training.autoencoder"} <= recipes
    assert owner("t2i.training.diffusion_init", recipes) == "diffusion"

    def owner_of(module: str, recipes: set[str]) -> str | None:
        return owner(module, recipes) if module in recipes else None

    wrong = [
        f"{module}:{line} imports the recipe {target}"
        for module, edges in graph.items()
        if module.startswith("t2i.training.") and module.split(".")[-1] != "cli"
        for target, _, line in edges
        if target in recipes and owner(target, recipes) != owner_of(module, recipes)
    ]
    assert not wrong, "recipes are leaves; only the training CLI picks one:\n" + "\n".join(wrong)


def test_families_are_siblings_that_do_not_know_the_registry(graph):
    families = (
        "t2i.pipeline",
        "t2i.cascade",
        "t2i.token_pipeline",
        "t2i.draw_pipeline",
        "t2i.gan_pipeline",
    )
    diffusion = ("t2i.pipeline", "t2i.cascade")
    wrong = [
        f"{module}:{line} imports {target}"
        for module in (*families, "t2i.protocol")
        for target, _, line in graph[module]
        if target == "t2i.families" or (module not in diffusion and target in families)
    ]
    assert not wrong, "\n".join(wrong)


def test_there_are_no_import_cycles(graph):
    """Tarjan's strongly connected components over every import, function-level ones included."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w, _, _ in graph.get(v, []):
            if w not in graph or w == "t2i":  # the root's constants; its `load` is lazy
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_no_private_name_crosses_a_module(graph):
    wrong = [
        f"{module}:{line} takes {name} from {target}"
        for module, edges in graph.items()
        for target, names, line in edges
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    for module, path in modules().items():
        aliases = {}
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("t2i"):
                        aliases[a.asname or a.name] = a.name
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("t2i"):
                for a in node.names:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and aliases[node.value.id] in graph
            ):
                wrong.append(f"{module}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not wrong, "\n".join(wrong)


def test_the_checks_see_a_wrong_arrow():
    """The layering check itself: a models module importing the pipeline is caught."""
    assert LAYERS.index(layer_of("t2i.pipeline")) > LAYERS.index(layer_of("t2i.models.unet"))
    assert layer_of("t2i.evaluation.cli") == "cli" and layer_of("t2i.images") == "core"
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("t2i.somewhere_new")
