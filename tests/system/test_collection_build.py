"""The collection builds into a tarball that ansible-galaxy installs, and ansible-doc reads it there."""

import subprocess
import tarfile

from ansible_run import _env


def test_build_install_and_document(tmp_path):
    root = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True).stdout.strip()
    build = subprocess.run(["ansible-galaxy", "collection", "build", root, "--output-path", str(tmp_path)],
                           capture_output=True, text=True, env=_env(), check=False)
    assert build.returncode == 0, build.stderr
    tarball = next(tmp_path.glob("vmctl-core-*.tar.gz"))
    names = tarfile.open(tarball).getnames()
    assert "plugins/modules/vm.py" in names and "plugins/module_utils/manager.py" in names
    assert not any(n.startswith((".cache", ".venv")) for n in names)

    dest = tmp_path / "installed"
    only_dest = _env({"ANSIBLE_COLLECTIONS_PATH": str(dest), "PYTHONPATH": ""})  # not the clone the tests use
    install = subprocess.run(["ansible-galaxy", "collection", "install", str(tarball), "-p", str(dest)],
                             capture_output=True, text=True, env=only_dest, check=False)
    assert install.returncode == 0, install.stderr
    assert (dest / "ansible_collections/vmctl/core/MANIFEST.json").is_file()
    doc = subprocess.run(["ansible-doc", "vmctl.core.vm"], capture_output=True, text=True, env=only_dest, check=False)
    assert doc.returncode == 0, doc.stderr
    assert "MODULE vmctl.core.vm (%s" % (dest / "ansible_collections/vmctl/core") in doc.stdout  # the installed copy
    assert "image_url" in doc.stdout
