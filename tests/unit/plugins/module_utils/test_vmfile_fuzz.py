"""Generated and mutated VMFiles (hypothesis, >= 10,000 of them): nothing but VmfileError ever
escapes the parser, and every problem has a position or a node path."""

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ansible_collections.vmctl.core.plugins.module_utils.vmfile import reader as vmfile

NODE_NAMES = ["vm", "image", "image-url", "image-checksum", "vcpus", "memory", "disk", "network", "cloud-init",
              "ssh", "provision", "hostname", "ssh-key", "user-data", "user", "private-key", "inline", "script",
              "source", "destination", "bridge", "name", "accel", "cpu", "machine", "memroy", "x",
              "private-network", "address"]
VALUES = st.one_of(
    st.integers(min_value=-2 ** 70, max_value=2 ** 70).map(str),
    st.sampled_from(['"web"', '"tap"', '"user"', '"shell"', '"file"', '"/tmp/x"', "true", "#false", "null", "#null",
                     "1.5", "0x10", "r\"raw\"", '#"v2raw"#', "bare", '"https://e.org/i.img"', '"~/k"', "1e400"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8).map(lambda s: '"%s"' % s.replace('"', "")),
)
PIECES = ["{", "}", ";", "\n", "/-", "//", "/*", "*/", "=", '"', "\\", "(t)", "#", " ", "\t", "\r\n", "\ufeff", "\x00"]


@st.composite
def vmfiles(draw, depth=0):
    lines = []
    for _node in range(draw(st.integers(0, 4 if depth else 3))):
        name = draw(st.sampled_from(NODE_NAMES))
        args = " ".join(draw(st.lists(VALUES, max_size=3)))
        props = " ".join("%s=%s" % (draw(st.sampled_from(["bridge", "name", "x", "address"])), draw(VALUES))
                         for _prop in range(draw(st.integers(0, 1))))
        line = " ".join(p for p in (name, args, props) if p)
        if depth < 3 and draw(st.booleans()):
            line += " {\n%s\n}" % draw(vmfiles(depth=depth + 1))
        lines.append(line)
    return "\n".join(lines)


@st.composite
def mutated(draw):
    text = draw(vmfiles())
    for _mutation in range(draw(st.integers(0, 4))):
        pos = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "dup"]))
        if op == "insert":
            text = text[:pos] + draw(st.sampled_from(PIECES)) + text[pos:]
        elif op == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 5)):]
        else:
            text = text[:pos] + text[pos:pos + 20] + text[pos:]
    return text


@settings(max_examples=10000, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(mutated())
def test_only_vmfile_errors_escape_and_every_problem_is_located(text):
    try:
        vmfile.parse_text(text, "fuzz.kdl")
    except vmfile.VmfileError as err:
        assert err.problems
        for problem in err.problems:
            assert (problem.line and problem.col) or problem.node_path, problem.render()
            problem.render()


@pytest.mark.parametrize("text", ["{" * 5000, "vm " + "{" * 200, '"' * 3, "\\", "/*" * 300, "vm\x00", "\ufeff\ufeff"])
def test_pathological_inputs(text):
    with pytest.raises(vmfile.VmfileError):
        vmfile.parse_text(text, "x.kdl")
