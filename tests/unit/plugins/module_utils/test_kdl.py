"""Our KDL reader against the reference parsers (ckdl, the C implementation, for v1 and v2; kdl-py for
the guide's v1 example): the same nodes and values. And what it refuses, it refuses at the right place."""

import math

import ckdl
import kdl
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ansible_collections.vmctl.core.plugins.module_utils.vmfile import kdl as _kdl

from test_vmfile import FULL_EXAMPLE_V1, FULL_EXAMPLE_V2


def ours(nodes):
    return [(n.name, [a.value for a in n.args], {k: v.value for k, (_l, _c, v) in n.props.items()}, ours(n.children or []))
            for n in nodes]


def theirs(nodes):
    def value(v):
        return v.value if isinstance(v, ckdl.Value) else v
    return [(n.name, [value(a) for a in n.args], {k: value(v) for k, v in n.properties.items()}, theirs(n.children))
            for n in nodes]


def same(a, b):
    """Equal trees, where NaN equals NaN, 1 is not 1.0 and True is not 1."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-15)
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


VALID = [
    FULL_EXAMPLE_V1,
    FULL_EXAMPLE_V2,
    'vm a { vcpus 2; flag #true; off #false; nothing #null }',
    'a 99999999999999999999999999999 -0x10 0o17 0b1_01 1.5e3 1_000 -7 +5 1__ 1_.5 0xFF_',
    'a (u8)1 k=(t)"v" /-x=1 /-3 4',
    'a r#"raw "quoted""# r"C:\\path"',
    'a #"v2 raw"# ##"x"#y"##',
    'a "\\u{1F600} \\n\\t\\"\\\\ \\b\\f\\r" "\\/"',
    'a "\\s" "x\\   y"',
    'a {\n}\n/- b { c }\n d',
    'a 1 \\\n 2 \\ // comment\n 3',
    'a #inf #-inf #nan 1e400',
    'a x=1 x=2',
    'a;;b',
    ';',
    'a { b; c }',
    'a /- \n "x"',
    'network tap bridge = br0',
    '(t)a',
    '( t )a "x"',
    'a (t) 1',
    'a -',
    'a x=1 { } /-{ }',
    'a /-{ } { b }',
    '"a\nb" "multi\nline v1 string"',
    '"#x" 1',
    'a """\n  x\n y\n """',
    'a """\n  x\n\n  """',
    'inline """\n    echo \\"a\\tb\\" \\\n      more\n    """',
    'a #"""\n  x "" \\n\n  """#',
    '/* nested /* comments */ here */ a /* inline */ 1',
    'node\r\nother\r\n',
    '\ufeffbom 1',
    'a "x" /- "y" "z"',
]


@pytest.mark.parametrize("text", VALID)
def test_same_nodes_and_values_as_ckdl(text):
    assert same(ours(_kdl.parse(text)), theirs(ckdl.parse(text, version="any").nodes))


def test_the_guides_v1_example_reads_as_kdl_py_reads_it():
    def value(v):  # kdl-py reads every number as a float
        return int(v) if isinstance(v, float) and v.is_integer() else v

    def kdl_py(nodes):
        return [(n.name, [value(a) for a in n.args], {k: value(v) for k, v in n.props.items()}, kdl_py(n.nodes))
                for n in nodes]
    assert same(ours(_kdl.parse(FULL_EXAMPLE_V1)), kdl_py(kdl.parse(FULL_EXAMPLE_V1).nodes))


# (text, line, col, message fragment): refused by ckdl too, and by us at this place.
INVALID = [
    ('a {} b', 1, 6, "arguments after the { } block"),
    ('a "x""y"', 1, 6, "expected a space"),
    ('a +.5', 1, 3, "malformed number +.5"),
    ('a 0x_1', 1, 3, "malformed number"),
    ('a\x01', 1, 2, "U+0001 is not allowed"),
    ('a "\\u{D800}"', 1, 4, "invalid \\u{…} escape"),
    ('a\n  "C:\\disk"', 2, 6, "unknown escape \\d"),
    ('a """\n  x\n y"""', 1, 3, 'end with """ on a line of its own'),
    ('a """\n x\n  """', 1, 3, "indented less than its closing"),
    ('a """\n  \\q\n  """', 1, 3, "unknown escape \\q"),
    ('a x=', 1, 5, "has no value after ="),
    ('a r#"x"', 1, 3, "unterminated raw string"),
    ('a #"""#', 1, 3, 'unterminated """ string'),
    ('a 1 \\ 2', 1, 7, "must end the line"),
]


@pytest.mark.parametrize("text,line,col,message", INVALID, ids=[case[3] for case in INVALID])
def test_refused_like_ckdl_and_at_the_place(text, line, col, message):
    with pytest.raises(Exception):
        ckdl.parse(text, version="any")
    with pytest.raises(_kdl.KdlSyntaxError) as err:
        _kdl.parse(text)
    assert message in err.value.message and (err.value.line, err.value.col) == (line, col), err.value.message
    assert err.value.hint


def test_stricter_than_ckdl_where_the_spec_is():
    # ckdl takes bidi overrides (which can make a line read differently from what it is) and an empty \u{}.
    for text, col in (('a "x\u202ey"', 5), ('a "\\u{}"', 4)):
        ckdl.parse(text, version="any")
        with pytest.raises(_kdl.KdlSyntaxError) as err:
            _kdl.parse(text)
        assert err.value.col == col


# Generated documents (v2 spelling, the one ckdl and we share fully): what both read is the same.
_WORD = st.from_regex(r"\A[a-z][a-z0-9-]{0,6}\Z").filter(lambda w: w not in ("true", "false", "null", "inf", "nan"))
_STRING = st.text(st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp", "Cf")), max_size=8)
_VALUE = st.one_of(
    st.integers(-10 ** 20, 10 ** 20).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: repr(f) if "." in repr(f) else repr(f) + ".0")
    .filter(lambda r: "e" not in r or "." in r.split("e")[0]),
    st.sampled_from(["#true", "#false", "#null", "0x1f", "0b101", "0o17", "1_000"]),
    _WORD,
    _STRING.map(lambda s: '"%s"' % s.replace("\\", "\\\\").replace('"', '\\"')),
    # A raw string's text may not hold its closing "# nor start with a quote (#""" opens a multi-line one).
    _STRING.filter(lambda s: '"#' not in s and not s.startswith('"')).map(lambda s: '#"%s"#' % s),
)


@st.composite
def documents(draw, depth=0):
    lines = []
    for _node in range(draw(st.integers(0, 3))):
        entries = []
        for _entry in range(draw(st.integers(0, 3))):
            prefix = "/-" if draw(st.integers(0, 6)) == 0 else ""
            key = draw(_WORD) + "=" if draw(st.booleans()) else ""
            entries.append(prefix + key + draw(_VALUE))
        line = " ".join([draw(_WORD)] + entries)
        if depth < 2 and draw(st.booleans()):
            line += " {\n%s\n}" % draw(documents(depth + 1))
        lines.append(draw(st.sampled_from(["", "/- "])) + line + draw(st.sampled_from(["", ";", " // c", " /* c */"])))
    return "\n".join(lines)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(documents())
def test_generated_documents_read_as_ckdl_reads_them(text):
    assert same(ours(_kdl.parse(text)), theirs(ckdl.parse(text, version="any").nodes)), text
