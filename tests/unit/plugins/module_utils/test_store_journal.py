"""The store's journal (issue 11, scale): a store of 64 KiB or more takes a one-record change as a line
appended to vms.json.journal, folded into vms.json under the lock. Every guarantee of the whole-file
store holds: a kill mid-append converges, a journal for another vms.json is never applied, a bad
journal line is that VM's error alone, and vms.json stays the guide's JSON object."""

import json
import multiprocessing
import os
import signal
import time

import pytest

from ansible_collections.vmctl.core.plugins.module_utils import store as store_mod
from ansible_collections.vmctl.core.plugins.module_utils.errors import StoreError
from ansible_collections.vmctl.core.plugins.module_utils.model import VmHandle
from ansible_collections.vmctl.core.plugins.module_utils.store import BadRecord, VmStore


def record(name, **extra):
    return dict({"id": "id-" + name, "name": name, "backend": "noop", "vcpus": 1, "memory_mb": 512,
                 "network": {"type": "User"}, "state": "prepared", "image_path": "/nonexistent/base.img"}, **extra)


def big_store(tmp_path, count=200, layout="lines"):
    """A vms.json of ``count`` records, over the journal's threshold: vmctl's one-per-line layout, or the
    guide's pretty-printed JSON (``layout="pretty"``, as another tool writes it)."""
    path = str(tmp_path / "vms.json")
    records = {"vm%04d" % i: record("vm%04d" % i, padding="x" * 300) for i in range(count)}
    with open(path, "w") as f:
        if layout == "pretty":
            json.dump(records, f, indent=2)
        else:
            f.write("{\n%s\n}\n" % ",\n".join("  %s: %s" % (json.dumps(n), json.dumps(r)) for n, r in records.items()))
    assert os.path.getsize(path) >= store_mod.JOURNAL_MIN_STORE
    return path


def file_state(path):
    """What vms.json alone holds (the guide's layout), and the journal's lines."""
    with open(path) as f:
        data = json.load(f)
    journal = path + ".journal"
    lines = open(journal).read().splitlines() if os.path.exists(journal) else []
    return data, lines


def test_a_change_in_a_big_store_is_one_journal_line_and_vms_json_is_untouched(tmp_path):
    """A create and a removal among 200 VMs: vms.json is not rewritten; its journal holds a header and
    one line per change; a fresh read sees both changes."""
    path = big_store(tmp_path)
    before = open(path, "rb").read()
    store = VmStore(path)
    store.put(VmHandle(id="new", name="new", backend="noop"))
    store.remove("vm0003")
    assert open(path, "rb").read() == before
    data, lines = file_state(path)
    assert json.loads(lines[0]) == {"#base": [os.stat(path).st_ino, os.stat(path).st_size, os.stat(path).st_mtime_ns]}
    assert json.loads(lines[1])["new"]["id"] == "new" and json.loads(lines[2]) == {"vm0003": None}
    vms = VmStore(path).list()
    assert "new" in vms and "vm0003" not in vms and len(vms) == 200
    assert VmStore(path).get("vm0004").id == "id-vm0004"


def test_the_journal_is_folded_in_once_it_reaches_a_quarter_of_vms_json(tmp_path):
    """Changes until the journal would pass 1/4 of vms.json: then vms.json is rewritten with every change
    (one record per line, sorted), the journal is gone, and vms.json alone is the whole store."""
    path = big_store(tmp_path)
    store = VmStore(path)
    size = os.path.getsize(path)
    folded = False
    for i in range(200):
        store.put(VmHandle(id="n%d" % i, name="n%03d" % i, backend="noop"))
        if not os.path.exists(path + ".journal"):
            folded = True
            break
        assert os.path.getsize(path + ".journal") <= size // store_mod.JOURNAL_SHARE
    assert folded, "the journal was never folded into vms.json"
    data, lines = file_state(path)
    assert lines == [] and len(data) == 200 + i + 1 and list(data) == sorted(data)
    assert len(VmStore(path).list()) == 200 + i + 1


def test_a_small_store_never_has_a_journal(tmp_path):
    """Below 64 KiB, vms.json is rewritten on every change: it is always the complete store."""
    path = str(tmp_path / "vms.json")
    store = VmStore(path)
    for i in range(20):
        store.put(VmHandle(id="s%d" % i, name="s%02d" % i, backend="noop"))
    assert not os.path.exists(path + ".journal") and len(file_state(path)[0]) == 20


def test_a_torn_journal_line_was_never_committed(tmp_path):
    """Fault: a writer killed mid-append left half a line (no newline). Gets: readers ignore it, the next
    writer cuts it off before appending, and every committed change is there."""
    path = big_store(tmp_path)
    store = VmStore(path)
    store.put(VmHandle(id="kept", name="kept", backend="noop"))
    with open(path + ".journal", "ab") as f:
        f.write(b'{"torn": {"id": "torn", "na')
    assert "torn" not in VmStore(path).list() and "kept" in VmStore(path).list()
    store.put(VmHandle(id="after", name="after", backend="noop"))
    lines = file_state(path)[1]
    assert all(line.endswith("}") for line in lines) and len(lines) == 3
    vms = VmStore(path).list()
    assert {"kept", "after"} <= set(vms) and "torn" not in vms


def _writer(path, first):
    store = VmStore(path)
    for i in range(first, first + 100000):
        store.put(VmHandle(id="k%d" % i, name="k%06d" % i, backend="noop"))


def test_kill_9_of_writers_at_random_points_converges(tmp_path):
    """Fault: a process appending and folding in a loop, SIGKILLed at 25 arbitrary moments. Gets: after
    each kill the store reads (no error, the 200 VMs intact), and the next change works."""
    path = big_store(tmp_path)
    ctx = multiprocessing.get_context("fork")
    for round_ in range(25):
        proc = ctx.Process(target=_writer, args=(path, round_ * 100000))
        proc.start()
        time.sleep(0.02 + (round_ % 7) * 0.013)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        vms = VmStore(path).list()
        assert all("vm%04d" % i in vms for i in range(200)) and not VmStore(path).bad
    VmStore(path).put(VmHandle(id="last", name="last", backend="noop"))
    assert "last" in VmStore(path).list()
    VmStore(path).compact()
    assert len(file_state(path)[0]) == len(VmStore(path).list())


def test_a_journal_for_an_earlier_vms_json_is_never_applied(tmp_path):
    """Fault: vms.json replaced after the journal was written (a fold cut short between its rename and
    the journal's removal, or a hand edit). Gets: the journal is ignored (its stale record does not
    override vms.json), and the next change sets it aside as vms.json.journal.stale, nothing lost."""
    path = big_store(tmp_path)
    store = VmStore(path)
    store.put(VmHandle(id="old", name="vm0001", backend="noop"))
    journal = open(path + ".journal").read()
    text = open(path).read()
    with open(path + ".new", "w") as f:  # vms.json as a fold writes it: a new file with the change in
        f.write(text.replace('"id": "id-vm0001"', '"id": "folded"'))
    os.replace(path + ".new", path)
    assert VmStore(path).get("vm0001").id == "folded"
    store.put(VmHandle(id="next", name="next", backend="noop"))
    assert open(path + ".journal.stale").read() == journal
    assert VmStore(path).get("vm0001").id == "folded" and VmStore(path).get("next").id == "next"


def test_a_bad_journal_line_is_that_vms_error_alone(tmp_path):
    """Bad input: a journal line for one VM that is not valid JSON, and one with a bad field. Gets: a
    BadRecord naming that VM (and the field); the other VMs stay usable; the journal is not folded into
    vms.json while a line of it is not JSON (that would break vms.json), until that VM is removed."""
    path = big_store(tmp_path)
    VmStore(path).put(VmHandle(id="a", name="a", backend="noop"))
    with open(path + ".journal", "a") as f:
        f.write('{"vm0002": {"id": "x", "vcpus": }\n')
        f.write(json.dumps({"vm0005": record("vm0005", vcpus="lots")}) + "\n")
    store = VmStore(path)
    vms = store.list()
    assert set(store.bad) == {"vm0002", "vm0005"} and "a" in vms and "vm0003" in vms
    with pytest.raises(BadRecord) as caught:
        store.get("vm0005")
    assert "VM vm0005: field vcpus" in caught.value.message
    with pytest.raises(BadRecord) as caught:
        store.get("vm0002")
    assert "VM vm0002" in caught.value.message and "not valid JSON" in caught.value.message
    store.put(VmHandle(id="b", name="b", backend="noop"))  # other VMs still change (appended)
    before = open(path).read()
    with pytest.raises(BadRecord) as caught:
        store.compact()  # folding would write the broken line into vms.json: refused, naming the VM
    assert "VM vm0002" in caught.value.message and "cannot be folded" in caught.value.message
    assert open(path).read() == before
    with store.transaction() as vms:
        vms.pop("vm0002")  # removing (or rewriting) the broken record lets the journal fold
    store.compact()
    assert not os.path.exists(path + ".journal")
    after = VmStore(path)
    assert "vm0002" not in after.list() and set(after.bad) == {"vm0005"}  # still reported, from vms.json now


def test_a_journal_line_naming_no_vm_is_an_error_naming_the_journal(tmp_path):
    """Bad input: a complete journal line that names no VM. Gets: StoreError naming the journal and the
    line; nothing is written over it."""
    path = big_store(tmp_path)
    VmStore(path).put(VmHandle(id="a", name="a", backend="noop"))
    with open(path + ".journal", "a") as f:
        f.write("garbage\n")
    before = open(path + ".journal").read()
    with pytest.raises(StoreError) as caught:
        VmStore(path).list()
    assert path + ".journal" in caught.value.message and "line 3" in caught.value.message
    with pytest.raises(StoreError):
        VmStore(path).put(VmHandle(id="b", name="b", backend="noop"))
    assert open(path + ".journal").read() == before


def test_the_guides_pretty_printed_store_is_read_and_rewritten_in_vmctls_layout(tmp_path):
    """A big vms.json in the guide's pretty-printed layout (written by another tool): read as is; the
    first change rewrites it in vmctl's one-record-per-line layout (same records); later ones journal."""
    path = big_store(tmp_path, layout="pretty")
    store = VmStore(path)
    assert len(store.list()) == 200
    store.put(VmHandle(id="a", name="a", backend="noop"))
    assert not os.path.exists(path + ".journal")
    text = open(path).read()
    assert store_mod._in_line_layout(text) and len(json.loads(text)) == 201
    assert json.loads(text)["vm0007"] == record("vm0007", padding="x" * 300)
    store.put(VmHandle(id="b", name="b", backend="noop"))
    assert os.path.exists(path + ".journal") and len(VmStore(path).list()) == 202


@pytest.mark.parametrize("size", [200, 5], ids=["journal", "whole-file"])
def test_a_change_on_a_full_disk_fails_and_changes_nothing(tmpfs, size):
    """Fault: the store's disk is full (ENOSPC) for a journal append (a big store) and for a whole-file
    rewrite (a small one). Gets: the OSError (the front-ends report it as no space left); every file
    of the store reads as before (no half line, no tmp file); once space is free, the change works."""
    mount = tmpfs.mount("1m")
    path = big_store(mount, count=200) if size == 200 else str(mount / "vms.json")
    store = VmStore(path)
    for i in range(size if size < 200 else 1):
        store.put(VmHandle(id="p%d" % i, name="p%d" % i, backend="noop"))
    before = {name: open(os.path.join(mount, name), "rb").read() for name in os.listdir(mount)}
    filler = tmpfs.fill(mount)
    with pytest.raises(OSError) as caught:
        store.put(VmHandle(id="x" * 6000, name="late", backend="noop"))
    assert caught.value.errno == 28
    after = {name: open(os.path.join(mount, name), "rb").read() for name in os.listdir(mount) if name != "filler"}
    assert after == before
    assert "late" not in VmStore(path).list()
    os.unlink(filler)
    store.put(VmHandle(id="x" * 6000, name="late", backend="noop"))
    assert VmStore(path).get("late").id == "x" * 6000
