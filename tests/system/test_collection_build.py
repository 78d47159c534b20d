"""The collection as Ansible users get it: the tarball built from a *used* tree (the caches a pytest run
and a demo leave, the demo's image link) holds only the collection, installs with ansible-galaxy into a
fresh path, passes the publishing gates (galaxy-importer, antsibull-docs, ansible-lint, ansible-builder)
and its bin/vmctl runs there with a pipx-style PATH.

The used tree is a copy of the checkout in the test's tmp dir; its big files and out-of-tree links point
at decoys in tmp, never at anything outside the test."""

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile

import pytest
import yaml

from support.ansible_run import _env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.environ.get("VMCTL_TOOLS_VENV", "")
SHIPPED = {"MANIFEST.json", "FILES.json", "README.md", "LICENSE", "CHANGELOG.rst", "requirements.txt", "bindep.txt",
           "plugins", "roles", "playbooks", "meta", "docs", "changelogs", "bin", "examples"}
MB = 1000 * 1000


def tool(name):
    path = os.path.join(TOOLS, "bin", name)
    if not os.path.exists(path):
        pytest.fail("%s not found in VMCTL_TOOLS_VENV=%r; run the tests through scripts/test (scripts/setup installs "
                    "requirements-tools.txt)" % (name, TOOLS))
    return path


def tools_env(extra=None):
    """The tools' venv first on PATH (they call ansible-doc, ansible-test...), no collection of the checkout."""
    env = _env({"PATH": os.path.join(TOOLS, "bin") + os.pathsep + os.environ["PATH"], "PYTHONPATH": "",
                "ANSIBLE_COLLECTIONS_PATH": ""})
    env.update(extra or {})
    return env


def run(argv, **kwargs):
    kwargs.setdefault("env", tools_env())
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False, timeout=600, **kwargs)


def used_tree(dest, decoys):
    """A copy of the checkout (tracked and new files) as a demo and a pytest run leave it."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = os.path.join(ROOT, rel)
        if os.path.lexists(src) and not os.path.isdir(src):
            os.makedirs(os.path.join(dest, os.path.dirname(rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(dest, rel), follow_symlinks=False)
    decoys.mkdir()
    big = decoys / "debian-12.qcow2"
    with open(big, "wb") as f:
        f.truncate(3 * MB)  # sparse stand-in for the demo's 276 MiB image
    (decoys / "venv").mkdir()
    junk = {
        ".pytest_cache/v/cache/lastfailed": "{}", ".hypothesis/examples/ab/cd": "x", ".vscode/settings.json": "{}",
        ".ansible/tmp/x": "x", "tests/output/junit.xml": "<x/>", "tests/unit/__pycache__/t.cpython-311.pyc": "x",
        "plugins/modules/__pycache__/vm.cpython-311.pyc": "x", "roles/vm_up/.DS_Store": "x",
        "examples/.cache/x": "x", "benchmarks/results/pull.json": "x" * (2 * MB), "vmctl-core-0.0.9.tar.gz": "x",
        "docs/notes.md~": "x", "examples/VMFile.kdl.swp": "x",
    }
    for rel, text in junk.items():
        os.makedirs(os.path.join(dest, os.path.dirname(rel)), exist_ok=True)
        with open(os.path.join(dest, rel), "w") as f:
            f.write(text)
    os.makedirs(dest / "examples" / "images", exist_ok=True)
    os.symlink(big, dest / "examples" / "images" / "debian-12.qcow2")  # what scripts/demo makes
    os.symlink(big, dest / "examples" / "disk.qcow2")                  # an out-of-tree link elsewhere too
    os.symlink(decoys / "venv", dest / ".venv")
    os.makedirs(dest / ".cache" / "collections" / "ansible_collections" / "vmctl")
    os.symlink(dest, dest / ".cache" / "collections" / "ansible_collections" / "vmctl" / "core")  # scripts/setup's


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    base = tmp_path_factory.mktemp("build")
    tree = base / "tree"
    used_tree(tree, base / "decoys")
    out = base / "dist"
    build = subprocess.run(["ansible-galaxy", "collection", "build", str(tree), "--output-path", str(out)],
                           capture_output=True, text=True, env=_env(), check=False)
    assert build.returncode == 0, build.stdout + build.stderr
    return next(out.glob("vmctl-core-*.tar.gz"))


@pytest.fixture(scope="module")
def installed(tarball, tmp_path_factory):
    """The tarball installed with ansible-galaxy into a fresh collections path."""
    dest = tmp_path_factory.mktemp("installed")
    install = subprocess.run(["ansible-galaxy", "collection", "install", str(tarball), "-p", str(dest)],
                             capture_output=True, text=True, env=_env({"ANSIBLE_COLLECTIONS_PATH": str(dest),
                                                                       "PYTHONPATH": ""}), check=False)
    assert install.returncode == 0, install.stdout + install.stderr
    return dest


def test_tarball_holds_only_the_collection(tarball):
    with tarfile.open(tarball) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert {n.split("/")[0] for n in names} <= SHIPPED
    assert not [n for n in names if any(part.startswith(".") for part in n.split("/"))]  # no dot-file or -dir
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", "~", ".swp", ".tar.gz"))]
    assert not [m.name for m in members if m.size > MB]
    assert not [m.name for m in members if m.issym() or m.islnk()]  # no link, in or out of the tree
    assert not [n for n in names if n.startswith("examples/images") or n.endswith(".qcow2")]
    for needed in ("LICENSE", "CHANGELOG.rst", "changelogs/changelog.yaml", "requirements.txt", "bindep.txt",
                   "meta/runtime.yml", "meta/execution-environment.yml", "bin/vmctl", "examples/VMFile.kdl",
                   "plugins/doc_fragments/attributes.py", "plugins/modules/vm.py", "plugins/module_utils/manager.py"):
        assert needed in names, needed
    for role in os.listdir(os.path.join(ROOT, "roles")):
        for needed in ("README.md", "meta/main.yml", "meta/argument_specs.yml", "tasks/main.yml"):
            assert "roles/%s/%s" % (role, needed) in names, (role, needed)
    with tarfile.open(tarball) as tar:
        assert "GNU GENERAL PUBLIC LICENSE" in tar.extractfile("LICENSE").read(200).decode()
        assert tar.getmember("bin/vmctl").mode & 0o111  # executable


def test_install_and_document(installed):
    only_dest = _env({"ANSIBLE_COLLECTIONS_PATH": str(installed), "PYTHONPATH": ""})  # not the clone the tests use
    assert (installed / "ansible_collections/vmctl/core/MANIFEST.json").is_file()
    doc = subprocess.run(["ansible-doc", "vmctl.core.vm"], capture_output=True, text=True, env=only_dest, check=False)
    assert doc.returncode == 0, doc.stderr
    assert "MODULE vmctl.core.vm (%s" % (installed / "ansible_collections/vmctl/core") in doc.stdout  # the installed copy
    assert "image_url" in doc.stdout


def pipx_path(tmp_path):
    """A directory with links to the venv's ansible* commands only, as pipx makes, + /usr/bin and /bin."""
    links = tmp_path / "pipx-bin"
    links.mkdir()
    venv_bin = os.path.dirname(sys.executable)
    for name in os.listdir(venv_bin):
        if name.startswith("ansible"):
            os.symlink(os.path.join(venv_bin, name), links / name)
    return os.pathsep.join([str(links), "/usr/bin", "/bin"])


def bare_env(tmp_path, path, **extra):
    """No venv, no ANSIBLE_COLLECTIONS_PATH, no PYTHONPATH: what a new user's shell has."""
    env = {"PATH": path, "HOME": str(tmp_path / "home"), "XDG_DATA_HOME": str(tmp_path / "xdg"), "LANG": "C.UTF-8"}
    env.update(extra)
    return env


def test_vmctl_runs_from_the_installed_collection_with_a_pipx_path(installed, tmp_path):
    vmctl = installed / "ansible_collections/vmctl/core/bin/vmctl"
    env = bare_env(tmp_path, pipx_path(tmp_path))
    listing = subprocess.run([str(vmctl), "list"], capture_output=True, text=True, env=env, check=False)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert listing.stdout.split()[:2] == ["NAME", "BACKEND"]
    version = subprocess.run([str(vmctl), "--version"], capture_output=True, text=True, env=env, check=False)
    assert str(installed / "ansible_collections/vmctl/core") in version.stdout  # the installed copy, not the checkout
    # a link to it on PATH (as the README says) works the same
    (tmp_path / "mybin").mkdir()
    os.symlink(vmctl, tmp_path / "mybin" / "vmctl")
    linked = subprocess.run(["vmctl", "list"], capture_output=True, text=True, check=False,
                            env=bare_env(tmp_path, str(tmp_path / "mybin") + os.pathsep + pipx_path(tmp_path / "mybin")))
    assert linked.returncode == 0, linked.stderr


def fake_ansible_playbook(directory, first_lines):
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "ansible-playbook"
    path.write_text(first_lines + "\n# a stand-in: vmctl only reads the first lines\n")
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("form", ["absolute", "env", "env -S", "pip's /bin/sh form", "through a symlink"])
def test_vmctl_finds_the_python_of_ansible_playbook(tmp_path, form):
    """Each shebang form pip, pipx and Debian write; the interpreter it names is a wrapper that records that
    it ran, then runs the test venv's python."""
    marker = tmp_path / "ran"
    wrapper_dir = tmp_path / "python-dir"
    wrapper_dir.mkdir()
    wrapper = wrapper_dir / "python3"
    wrapper.write_text("#!/bin/sh\necho \"$0\" >> %s\nexec %s \"$@\"\n" % (marker, sys.executable))
    wrapper.chmod(0o755)
    bin_dir = tmp_path / "bin"
    if form == "absolute":
        fake_ansible_playbook(bin_dir, "#!%s" % wrapper)
    elif form == "env":
        fake_ansible_playbook(bin_dir, "#!/usr/bin/env python3")
    elif form == "env -S":
        fake_ansible_playbook(bin_dir, "#!/usr/bin/env -S python3 -E")
    elif form == "pip's /bin/sh form":
        fake_ansible_playbook(bin_dir, "#!/bin/sh\n'''exec' \"%s\" \"$0\" \"$@\"\n' '''" % wrapper)
    else:
        real = fake_ansible_playbook(tmp_path / "real", "#!%s" % wrapper)
        bin_dir.mkdir()
        os.symlink(real, bin_dir / "ansible-playbook")
    path = os.pathsep.join([str(bin_dir), str(wrapper_dir), "/usr/bin", "/bin"])
    proc = subprocess.run([os.path.join(ROOT, "bin", "vmctl"), "--version"], capture_output=True, text=True,
                          env=bare_env(tmp_path, path), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("vmctl ") and marker.read_text().strip().endswith("python3")


def test_vmctl_without_ansible_says_what_to_install(tmp_path):
    """Bad setup: no ansible-playbook on PATH. vmctl says so, with a hint, and exits 1."""
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run([os.path.join(ROOT, "bin", "vmctl"), "list"], capture_output=True, text=True,
                          env=bare_env(tmp_path, str(empty)), check=False)
    assert proc.returncode == 1
    assert "error: ansible-playbook is not on PATH" in proc.stderr and "hint: Install ansible-core" in proc.stderr


@pytest.mark.slow
def test_galaxy_importer_accepts_the_tarball(tarball, tmp_path):
    """galaxy-importer as Galaxy runs it; ansible-test is off (scripts/sanity runs it on its own)."""
    cfg = tmp_path / "galaxy-importer.cfg"
    cfg.write_text("[galaxy-importer]\nRUN_ANSIBLE_TEST = False\nRUN_ANSIBLE_LINT = True\nCHECK_CHANGELOG = True\n"
                   "RUN_ANSIBLE_DOC = True\nLOG_LEVEL_MAIN = INFO\n")
    proc = run([os.path.join(TOOLS, "bin", "python"), "-m", "galaxy_importer.main", tarball],
               cwd=tmp_path, env=tools_env({"GALAXY_IMPORTER_CONFIG": str(cfg), "HOME": str(tmp_path)}))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert not [line for line in out.splitlines() if line.startswith(("ERROR", "WARNING"))], out
    result = json.loads((tmp_path / "importer_result.json").read_text())
    assert result["metadata"]["namespace"] == "vmctl" and result["metadata"]["name"] == "core"


def extracted(tarball, dest):
    """The tarball unpacked where ansible-core and the docs tools look: dest/ansible_collections/vmctl/core."""
    root = dest / "ansible_collections" / "vmctl" / "core"
    root.mkdir(parents=True)
    with tarfile.open(tarball) as tar:
        tar.extractall(root, filter="data")
    return root


@pytest.mark.slow
def test_antsibull_docs_lint_is_clean(tarball, tmp_path):
    root = extracted(tarball, tmp_path)
    proc = run([tool("antsibull-docs"), "lint-collection-docs", "--plugin-docs", root], cwd=tmp_path,
               env=tools_env({"ANSIBLE_COLLECTIONS_PATH": str(tmp_path)}))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_ansible_lint_production_is_clean(tarball, tmp_path):
    """On the roles and playbooks that ship, with the project's .ansible-lint (no rule skipped)."""
    root = extracted(tarball, tmp_path)
    env = tools_env({"HOME": str(tmp_path), "ANSIBLE_COLLECTIONS_PATH": str(tmp_path)})
    proc = run([tool("ansible-lint"), "--profile", "production", "--offline", "-c", os.path.join(ROOT, ".ansible-lint"),
                "roles", "playbooks"], cwd=root, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_execution_environment_gets_runtime_packages_and_qemu(installed, tmp_path):
    """ansible-builder introspect on the installed collection: the runtime ranges, no test package; bindep: qemu."""
    proc = run([tool("ansible-builder"), "introspect", "--sanitize", installed], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = yaml.safe_load(proc.stdout)
    python = [line.split("#")[0].strip().lower() for line in found["python"]]
    system = [line.split("#")[0].strip() for line in found["system"]]
    names = {re.split(r"[<>=!~ ;\[]", req)[0] for req in python}
    # no test package; PyYAML comes with ansible-core, which ansible-builder leaves out of the list
    assert {"paramiko", "cryptography", "pycdlib", "requests", "zstandard"} <= names <= {
        "paramiko", "cryptography", "pycdlib", "pyyaml", "requests", "zstandard"}, python
    assert not [req for req in python if "==" in req], python  # ranges, not pins
    assert {"qemu-system-x86 [platform:dpkg]", "qemu-utils [platform:dpkg]", "openssh-client [platform:dpkg]"} <= set(system)
    bindep = run([tool("bindep"), "-l", "newline", "-f",
                  installed / "ansible_collections/vmctl/core/bindep.txt"], cwd=tmp_path)
    assert {"qemu-system-x86", "qemu-utils", "openssh-client"} <= set(bindep.stdout.split()), bindep.stdout + bindep.stderr
