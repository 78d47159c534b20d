"""The layout's rules, read from the source with ast (docs/architecture.md):

- no import cycle among the collection's own modules, counting imports inside functions too;
- nothing in module_utils (which runs inside modules, on the hypervisor) imports plugin_utils (controller only);
- modules import only module_utils;
- the engine's layers: manager and reconcile do no backend-specific work (no backends.qemu/propolis, no
  qemu-img: that is behind the backend's hooks), reconcile (the planner) sits above the manager and
  nothing below imports it, and neither the images nor the backends know the VM store or the manager.

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


def imported_names(path, known):
    """``(module, name)`` for each collection module that ``path`` imports; ``name`` is what it takes from it
    (None for a whole module; ``from pkg import submodule`` resolves to the submodule)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PREFIX):
            base = node.module[len(PREFIX):]
            for alias in node.names:
                sub = base + "." + alias.name
                found.add((sub, None) if sub in known else (base, alias.name))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PREFIX):
                    found.add((alias.name[len(PREFIX):], None))
    return found


def imports_of(path, known):
    """The collection modules that ``path`` imports."""
    return {module for module, _name in imported_names(path, known)}


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


BACKEND_SPECIFIC = ("module_utils.backends.qemu", "module_utils.backends.propolis", "module_utils.images.qemu_img")
ENGINE_RULES = [
    # (importing modules, forbidden modules, forbidden names taken from any module)
    (("module_utils.manager",), BACKEND_SPECIFIC + ("module_utils.reconcile",), ()),
    (("module_utils.reconcile",), BACKEND_SPECIFIC + ("module_utils.backends.",), ()),
    (("module_utils.images.", "module_utils.backends.", "module_utils.guest."),
     ("module_utils.manager", "module_utils.reconcile", "module_utils.module"), ("VmStore",)),
]


def engine_breaches(rules, edges_with_names):
    breaches = []
    for importers, modules, names in rules:
        for name, deps in sorted(edges_with_names.items()):
            if not (name in importers or name.startswith(tuple(i for i in importers if i.endswith(".")))):
                continue
            for module, taken in sorted(deps, key=str):
                if module.startswith(modules) or taken in names:
                    breaches.append("%s imports %s%s" % (name, module, "." + taken if taken else ""))
    return breaches


def test_the_engine_rule_sees_a_breach():
    edges = {"module_utils.manager": {("module_utils.backends.qemu.backend", "pick_ssh_port")},
             "module_utils.images.cache": {("module_utils.store", "VmStore"), ("module_utils.store", "atomic_write")}}
    assert sorted(engine_breaches(ENGINE_RULES, edges)) == [
        "module_utils.images.cache imports module_utils.store.VmStore",
        "module_utils.manager imports module_utils.backends.qemu.backend.pick_ssh_port"]


def test_backend_specific_work_stays_behind_the_backends():
    known = collection_modules()
    edges = {name: imported_names(path, known) for name, path in known.items()}
    breaches = engine_breaches(ENGINE_RULES, edges)
    assert not breaches, "\n".join(breaches)
