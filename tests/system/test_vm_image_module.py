"""vmctl.core.vm_image and vm_image_info through real ansible-playbook runs against a real nginx."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from support.disk_images import compress, make_qcow2, sha256_file

from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.module_utils.store import VmStore
from ansible_collections.vmctl.core.plugins.module_utils.model import VmHandle

pytestmark = pytest.mark.slow


def playbook(tmp_path, tasks, check=False):
    """Run ``tasks`` on localhost; each task's result is registered as ``r<i>`` and returned in order."""
    registered = []
    for i, task in enumerate(tasks):
        task = dict(task, register="r%d" % i, ignore_errors=True)
        registered.append(task)
    out = tmp_path / "results.json"
    registered.append({"ansible.builtin.copy": {
        "content": "{{ [%s] | to_json }}" % ", ".join("r%d" % i for i in range(len(tasks))),
        "dest": str(out)}, "check_mode": False})
    book = tmp_path / "play.yml"
    book.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": registered}]))
    env = dict(os.environ, ANSIBLE_HOME=str(tmp_path / "ansible-home"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
               ANSIBLE_PYTHON_INTERPRETER=sys.executable)  # modules need the venv's packages
    argv = ["ansible-playbook", "-i", "localhost,", "-c", "local", str(book)] + (["--check"] if check else [])
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text())


@pytest.fixture
def published(tmp_path, http_files):
    qcow2 = make_qcow2(tmp_path / "disk.qcow2", size_mb=16, data_mb=2, seed=11)
    http_files.put("disk.qcow2.zst", compress(qcow2, "zst"))
    return qcow2, http_files.url("disk.qcow2.zst")


def test_present_twice_downloads_once(tmp_path, http_files, published):
    qcow2, url = published
    first, second = playbook(tmp_path, [
        {"vmctl.core.vm_image": {"url": url, "name": "debian.qcow2"}},
        {"vmctl.core.vm_image": {"url": url}},
    ])
    assert first["changed"] is True and first["actions"] == ["download"] and not first.get("failed")
    assert first["format"] == "qcow2" and first["sha256"] == sha256_file(qcow2) and first["url"] == url
    assert first["size"] == os.path.getsize(qcow2) and first["compression"] == "zstd"
    assert os.path.basename(first["path"]).startswith("debian-") and sha256_file(first["path"]) == first["sha256"]
    assert second["changed"] is False and second["actions"] == [] and second["path"] == first["path"]
    assert len(http_files.body_gets("disk.qcow2.zst")) == 1


def test_check_mode_reports_a_download_and_downloads_nothing(tmp_path, http_files, published):
    url = published[1]
    (would,) = playbook(tmp_path, [{"vmctl.core.vm_image": {"url": url}}], check=True)
    assert would["changed"] is True and would["actions"] == ["download"] and would["sha256"] is None
    assert http_files.requests() == [] and VmManager().image_cache().list() == []
    assert not os.path.exists(would["path"])

    playbook(tmp_path, [{"vmctl.core.vm_image": {"url": url}}])
    (again,) = playbook(tmp_path, [{"vmctl.core.vm_image": {"url": url}}], check=True)
    assert again["changed"] is False and len(http_files.requests()) == 1


def test_absent_removes_and_is_refused_while_a_vm_uses_the_image(tmp_path, published):
    url = published[1]
    (pulled,) = playbook(tmp_path, [{"vmctl.core.vm_image": {"url": url}}])
    VmStore().put(VmHandle(id="web", name="web", work_dir="/nonexistent/web", image_path=pulled["path"]))
    refused, checked = playbook(tmp_path, [
        {"vmctl.core.vm_image": {"url": url, "state": "absent"}},
        {"vmctl.core.vm_image": {"url": url, "state": "absent", "force": True}, "check_mode": True},
    ])
    assert refused["failed"] and "web" in refused["msg"] and refused["error"]["code"] == "vmctl.image.in_use"
    assert refused["error"]["vms"] == ["web"] and refused["error"]["hint"]
    assert checked["changed"] is True and checked["used_by"] == ["web"] and os.path.exists(pulled["path"])

    VmStore().remove("web")
    removed, again = playbook(tmp_path, [
        {"vmctl.core.vm_image": {"path": pulled["path"], "state": "absent"}},
        {"vmctl.core.vm_image": {"url": url, "state": "absent"}},
    ])
    assert removed["changed"] is True and removed["actions"] == ["remove"] and removed["url"] == url
    assert not os.path.exists(pulled["path"]) and VmManager().image_cache().list() == []
    assert again["changed"] is False


def test_info_lists_and_inspects(tmp_path, http_files, published):
    qcow2, url = published
    (pulled,) = playbook(tmp_path, [{"vmctl.core.vm_image": {"url": url}}])
    listing, by_url, by_path, missing = playbook(tmp_path, [
        {"vmctl.core.vm_image_info": {}},
        {"vmctl.core.vm_image_info": {"url": url}},
        {"vmctl.core.vm_image_info": {"path": qcow2}},
        {"vmctl.core.vm_image_info": {"url": http_files.url("never.qcow2")}},
    ])
    assert [i["path"] for i in listing["images"]] == [pulled["path"]] and listing["changed"] is False
    entry = listing["images"][0]
    assert entry["url"] == url and entry["sha256"] == pulled["sha256"] and entry["used_by"] == []
    (inspected,) = by_url["images"]
    assert inspected["format"] == "qcow2" and inspected["virtual_size"] == 16 << 20 and inspected["cached"]
    assert inspected["backing_file"] is None and inspected["external_references"] == []
    assert by_path["images"][0]["cached"] is False and by_path["images"][0]["path"] == qcow2
    assert missing["images"] == []


def test_download_errors_are_clean_failures(tmp_path, http_files):
    url = http_files.url("missing.qcow2")
    bad_checksum, not_found = playbook(tmp_path, [
        {"vmctl.core.vm_image": {"url": url, "checksum": "sha256:xyz"}},
        {"vmctl.core.vm_image": {"url": url}},
    ])
    assert bad_checksum["failed"] and bad_checksum["error"]["code"] == "vmctl.image.invalid_checksum"
    assert not_found["failed"] and url in not_found["msg"] and "404" in not_found["msg"]
    assert not_found["error"]["code"] == "vmctl.image.download_failed" and not_found["error"]["status"] == 404
    assert "Traceback" not in not_found.get("exception", "")  # an engine error, not a crash
