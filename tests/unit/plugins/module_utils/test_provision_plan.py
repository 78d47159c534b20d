"""The provision plan's digest and what up does about a VM's plan (provision.plan_digest, provision_status)."""

from ansible_collections.vmctl.core.plugins.module_utils.guest import provision


def steps(tmp_path, script_text="echo built\n"):
    script = tmp_path / "build.sh"
    script.write_text(script_text)
    source = tmp_path / "app.tar"
    source.write_bytes(b"tar")
    return [{"step": 1, "type": "shell", "inline": "echo hi"},
            {"step": 2, "type": "shell", "script": str(script)},
            {"step": 3, "type": "file", "source": str(source), "destination": "/tmp/app.tar"}]


def test_the_digest_covers_the_steps_and_the_files_they_upload(tmp_path):
    plan = steps(tmp_path)
    first = provision.plan_digest(plan)
    assert first.startswith("sha256:") and provision.plan_digest(plan) == first
    (tmp_path / "build.sh").write_text("echo built differently\n")  # same steps, other script contents
    assert provision.plan_digest(plan) != first
    changed = [dict(plan[0], inline="echo bye")] + plan[1:]
    assert provision.plan_digest(changed) != provision.plan_digest(plan)
    (tmp_path / "app.tar").unlink()  # an unreadable file: a digest all the same (the step fails when it runs)
    assert provision.plan_digest(plan) != first


def test_provision_status(tmp_path):
    plan = steps(tmp_path)
    digest = provision.plan_digest(plan)
    assert provision.provision_status(None, [], digest) == "none"
    assert provision.provision_status(None, plan, digest) == "pending"
    assert provision.provision_status({"digest": digest, "completed": False}, plan, digest) == "pending"
    assert provision.provision_status({"digest": digest, "completed": True}, plan, digest) == "done"
    assert provision.provision_status({"digest": "sha256:old", "completed": True}, plan, digest) == "changed"
    assert provision.provision_status({"digest": digest, "completed": "yes"}, plan, digest) == "pending"  # hand-edited
