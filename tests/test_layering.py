"""Ring 0 has no import cycles: each module can be read, tested and replaced from the bottom up.

The graph is import-linter's own (grimp), built from the source; imports
under ``if TYPE_CHECKING:`` are left out (they exist for annotations only
and are never executed). The other layering rules are import-linter's
contracts in pyproject.toml (``lint-imports``).
"""

from __future__ import annotations

import grimp


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every strongly connected set of modules larger than one (or a module importing itself), sorted.

    Tarjan's algorithm, iterative (the graph is small, the recursion would
    not be deep, but a cycle finder should not depend on that).
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or graph.direct_import_exists(importer=node, imported=node):
                    found.append(sorted(component))
    return sorted(found)


def _chain(graph: grimp.ImportGraph, cycle: list[str]) -> str:
    """One import chain around ``cycle`` (its first module back to itself), for the failure message."""
    first = cycle[0]
    for middle in sorted(graph.find_modules_directly_imported_by(first)):
        if middle in cycle:
            back = graph.find_shortest_chain(importer=middle, imported=first) or ()
            return " -> ".join([first, *back])
    return ", ".join(cycle)


def test_spk_has_no_import_cycles() -> None:
    graph = grimp.build_graph("spk", exclude_type_checking_imports=True, cache_dir=None)
    assert "spk._machine" in graph.modules and "spk._world" in graph.modules  # the graph is ring 0's
    cycles = import_cycles(graph)
    assert not cycles, "import cycles in spk/: " + "; ".join(_chain(graph, c) for c in cycles)


def test_the_cycle_finder_finds_cycles_and_only_cycles() -> None:
    graph = grimp.ImportGraph()
    for importer, imported in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "e"), ("f", "f"), ("g", "d")]:
        graph.add_import(importer=importer, imported=imported)
    assert import_cycles(graph) == [["a", "b", "c"], ["f"]]
    assert _chain(graph, ["a", "b", "c"]) == "a -> b -> c -> a"
    graph.remove_import(importer="c", imported="a")
    assert import_cycles(graph) == [["f"]]
