"""The vmfile module through a real ``ansible`` run: records of a good VMFile, every problem of a bad one."""

import textwrap

from support.ansible_run import module


def test_records_and_problems(tmp_path):
    (tmp_path / "disk.qcow2").write_text("x")
    good = tmp_path / "VMFile.kdl"
    good.write_text(textwrap.dedent('''\
        vm "web" {
            image "disk.qcow2"
            vcpus 2
            cloud-init { hostname "web.example"; }
            ssh { user "admin"; }
            provision "shell" { inline "echo hi"; }
        }
        vm "db" { image "disk.qcow2"; }
    '''))
    result = module("vmfile", {"path": str(good), "name": ["web"]}, check=True)
    assert not result["failed"] and result["changed"] is False
    assert [vm["name"] for vm in result["vms"]] == ["web"]
    web = result["vms"][0]
    assert web["image"] == str(tmp_path / "disk.qcow2") and web["vcpus"] == 2 and web["memory"] == 1024
    assert web["ssh"] == {"user": "admin", "private_key": None, "boot_timeout": None, "stall_timeout": None, "host_key_checking": "yes"}
    assert web["cloud_init"] == {"hostname": "web.example", "ssh_key": None, "user_data": None, "generate_key": True}
    assert web["provisions"] == [{"step": 1, "type": "shell", "inline": "echo hi", "description": "shell: echo hi"}]
    assert web["provision_digest"].startswith("sha256:") and "provision_status" not in web
    assert "current_state" not in web
    with_state = module("vmfile", {"path": str(good), "current_state": True}, check=True)
    assert [(vm["name"], vm["current_state"]) for vm in with_state["vms"]] == [("web", "absent"), ("db", "absent")]

    bad = tmp_path / "bad.kdl"
    bad.write_text('vm "web" {\n    image "disk.qcow2"\n    vcpus 0\n    memroy 5\n}\n')
    failed = module("vmfile", {"path": str(bad)})
    assert failed["failed"] and failed["msg"].startswith("2 problems")
    assert [(p["line"], p["col"]) for p in failed["problems"]] == [(3, 11), (4, 5)]
    assert "%s:4:5: error: unknown node memroy" % bad in failed["msg"]
    assert "did you mean `memory`?" in failed["problems"][1]["hint"]

    missing = module("vmfile", {"path": str(tmp_path / "nope.kdl")})
    assert missing["failed"] and missing["error"]["code"] == "vmctl.vmfile.not_found"
