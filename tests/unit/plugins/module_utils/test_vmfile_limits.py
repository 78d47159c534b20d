"""Issue 11 item 11: size, node and string limits, and short excerpts in VMFile errors."""

import pytest

from ansible_collections.vmctl.core.plugins.module_utils.vmfile import reader as vmfile
from ansible_collections.vmctl.core.plugins.module_utils.errors import InvalidSpec
from ansible_collections.vmctl.core.plugins.module_utils.model import VmSpec


def problems(text):
    with pytest.raises(vmfile.VmfileError) as exc:
        vmfile.parse_text(text, "VMFile.kdl")
    return exc.value


def test_a_file_over_the_size_limit_is_refused_before_parsing(tmp_path):
    """A 5 MB VMFile → "larger than 4194304 bytes", read no further."""
    path = tmp_path / "VMFile.kdl"
    path.write_text('vm "a" { image "x" }\n' + "// padding\n" * (5 * 1024 * 1024 // 11))
    with pytest.raises(vmfile.VmfileError) as exc:
        vmfile.load(str(path))
    assert "larger than %d bytes" % vmfile.MAX_BYTES in exc.value.message and exc.value.hint


def test_too_many_nodes_is_one_clear_problem():
    """20,000 nodes → "at most 10000 are allowed" (not 20,000 problems)."""
    err = problems('vm "a" {\n' + "  x 1\n" * 20000 + "}\n")
    assert len(err.problems) == 1 and "at most %d" % vmfile.MAX_NODES in err.problems[0].message


def test_a_huge_string_is_refused_and_not_echoed():
    """A 5 MB ``cpu`` string → refused by length; the error stays short."""
    err = problems('vm "a" {\n  image "/x"\n  cpu "%s"\n}\n' % ("m" * (5 * 1024 * 1024 // 2)))
    assert any("characters long" in p.message for p in err.problems)
    assert len(err.message) < 2000


def test_the_engine_refuses_a_huge_cpu_from_any_front_end():
    """``cpu`` of 1 MB through VmSpec (the vm module and CLI path) → "not a QEMU model name", message short."""
    with pytest.raises(InvalidSpec) as exc:
        VmSpec(name="a", image_path="/x", cpu="m" * 1024 * 1024)
    assert "is not a QEMU model name" in exc.value.message and len(exc.value.message) < 300


def test_a_long_source_line_is_cut_to_an_excerpt_with_the_caret_in_place():
    """A 500 KB line with a mistake at its end → an excerpt of at most ~120 characters, caret under the mistake."""
    line = 'vm "a" { image "/x"; vcpus 2; ' + "/* %s */ " % ("z" * 500000) + "vcpuz 3 }"
    err = problems(line + "\n")
    problem = next(p for p in err.problems if "vcpuz" in p.message)
    assert len(problem.source_line) <= vmfile.MAX_EXCERPT + 2 and problem.col == line.index("vcpuz") + 1
    rendered = problem.render().splitlines()
    source, caret = rendered[1], rendered[2]
    assert source[caret.index("^"):].startswith("vcpuz")
    assert len(err.message) < 2000
