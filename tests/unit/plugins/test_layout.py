"""The layout's rules, read from the source with ast (docs/architecture.md):

- no import cycle among the collection's own modules, counting imports inside functions too;
- nothing in module_utils (which runs inside modules, on the hypervisor) imports plugin_utils (controller only);
- modules import only module_utils.

Bad input: a cycle or a layering breach added anywhere under plugins/. It gets: a failure naming the modules.
"""

import ast
import os

import pytest

PLUGINS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
                       "plugins")
PREFIX = "ansible_collections.vmctl.core.plugins."


def module_name(path):
    rel = os.path.relpath(path, PLUGINS)[:-3].replace(os.sep, ".")
    return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def collection_modules():
    found = {}
    for directory, _dirs, files in os.walk(PLUGINS):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                found[module_name(path)] = path
    return found


def imports_of(path, known):
    """The collection modules that ``path`` imports (``from pkg import submodule`` resolves to the submodule)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PREFIX):
            base = node.module[len(PREFIX):]
            for alias in node.names:
                sub = base + "." + alias.name
                found.add(sub if sub in known else base)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PREFIX):
                    found.add(alias.name[len(PREFIX):])
    return found


def graph():
    known = collection_modules()
    return {name: imports_of(path, known) & set(known) for name, path in known.items()}


def find_cycle(edges):
    """One cycle as a list of modules, or None (depth-first search with colours)."""
    colour, stack = {}, []

    def visit(node):
        colour[node] = "grey"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if colour.get(nxt) == "grey":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in colour:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        colour[node] = "black"
        return None

    for node in sorted(edges):
        if node not in colour:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_rules_see_a_cycle_and_a_clean_graph():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_is_read():
    edges = graph()
    assert "module_utils.manager" in edges["modules.vm"]
    assert "plugin_utils.ssh.protocol" in edges["plugin_utils.ssh.server"]


def test_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("layer, forbidden", [
    ("module_utils.", ("plugin_utils.", "connection.", "inventory.", "action.", "modules.")),
    ("modules.", ("plugin_utils.", "connection.", "inventory.", "action.")),
])
def test_layers(layer, forbidden):
    breaches = sorted("%s imports %s" % (name, dep) for name, deps in graph().items() if name.startswith(layer)
                      for dep in deps if dep.startswith(forbidden))
    assert not breaches, "\n".join(breaches)
