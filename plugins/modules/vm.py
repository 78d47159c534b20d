#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmctl.core developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

__metaclass__ = type

DOCUMENTATION = r"""
module: vm
short_description: Create or destroy a vmctl virtual machine
version_added: 0.1.0
description:
  - Makes sure a VM exists with the given image and resources, like C(vmctl create), or that it
    does not exist, like C(vmctl destroy).
  - C(state=present) prepares the VM without starting it - copy-on-write overlay on the image,
    cloud-init seed ISO, SSH keys, SSH port and MAC address, store entry. Use
    M(vmctl.core.vm_state) to start it.
  - Changes that can be applied to an existing VM (vCPUs, memory, acceleration, CPU model, firmware, a bigger
    disk) are applied while it is stopped; port forwards also while it runs, from its next start; changes that need a new disk (image, network,
    cloud-init, a smaller disk) are refused unless O(recreate=true).
author:
  - vmctl.core developers (@vmctl)
options:
  name:
    description:
      - VM name (letters, digits, C(.), C(_), C(-); at most 63 characters).
      - Required unless O(record) is given.
    type: str
  record:
    description:
      - One VM record of M(vmctl.core.vmfile)'s RV(vmctl.core.vmfile#module:vms), passed whole - its name, image,
        resources, network, cloud-init, SSH and boot settings - instead of the options that describe a VM.
      - Mutually exclusive with O(name) and the options that describe a VM; O(image) may still be given, and then
        wins over the record's image (the path that M(vmctl.core.vm_image) pulled, so nothing is resolved twice).
      - Keys of the record that do not describe the VM (its provision steps, current state, wait limits) are ignored.
    type: dict
  state:
    description:
      - V(present) creates the VM if needed; V(absent) stops and destroys it with its disk, and removes the files a
        controller staged for it on this host (C(<data dir>/staged/<name>/), see P(vmctl.core.staged#filter)), also
        when the VM itself was never made.
    type: str
    choices: [present, absent]
    default: present
  image:
    description: Local disk image (qcow2 or raw) the VM's overlay is based on. Mutually exclusive with O(image_url).
    type: path
  image_url:
    description: URL of the image, downloaded once into the image cache (see M(vmctl.core.vm_image)).
    type: str
  image_checksum:
    description: C(sha256:<hex>), C(sha512:<hex>) or the URL of a C(SHA256SUMS) file, verified before the image is used.
    type: str
  vcpus:
    description: Number of virtual CPUs (1-255).
    type: int
    default: 1
  memory:
    description: Memory in MiB.
    type: int
    default: 1024
  disk:
    description: Disk size in GiB; the overlay is grown to it. Defaults to the image's size.
    type: int
  network:
    description: How the VM is connected.
    type: dict
    suboptions:
      type:
        description:
          - V(user) is user-mode networking with SSH forwarded from a free port on 127.0.0.1.
          - V(tap) attaches to the Linux bridge O(network.bridge) (it must be allowed in C(/etc/qemu/bridge.conf)).
          - V(vnic) is an illumos VNIC for the Propolis backend; V(none) has no network.
        type: str
        choices: [user, tap, vnic, none]
        default: user
      bridge:
        description: Bridge for V(tap) networking.
        type: str
      name:
        description: VNIC name for V(vnic) networking.
        type: str
  cloud_init:
    description:
      - Build a NoCloud seed. Without O(cloud_init.ssh_key) and O(cloud_init.user_data) the guest
        trusts the public half of O(ssh.private_key), or a key generated for this VM.
      - Omit it, or set it to V(false), for images without cloud-init; V(true) is a seed with the defaults.
    type: dict
    suboptions:
      hostname:
        description: Guest hostname (defaults to the VM name).
        type: str
      ssh_key:
        description: Public key file to authorize for the SSH user.
        type: path
      user_data:
        description: Your own cloud-config file, passed to the guest untouched.
        type: path
      generate_key:
        description: Generate an Ed25519 key for this VM when no other key is given.
        type: bool
        default: true
  ssh:
    description: How to log in to the guest (needed by M(vmctl.core.vm_state) O(vmctl.core.vm_state#module:wait_for_ssh) and by provisioning).
    type: dict
    suboptions:
      user:
        description: Login user (created by cloud-init with passwordless sudo).
        type: str
        default: vm
      private_key:
        description: Private key to log in with; defaults to the generated one.
        type: path
      host_key_checking:
        description:
          - Which host key to trust. V(yes) trusts the key vmctl generated for the VM or, when it generated
            none (the user's own O(cloud_init.user_data), or an image that already trusts O(ssh.private_key)),
            the keys the guest's cloud-init printed on its serial console after the VM's latest start.
          - V(accept-new) (OpenSSH's name) is for images that print no keys there; the first key the guest
            offers is pinned, and any other key after it is refused.
        type: str
        choices: ["yes", accept-new]
        default: "yes"
  backend:
    description:
      - Hypervisor backend. V(auto) is QEMU on Linux and Propolis on illumos.
      - V(propolis) runs the VM in an illumos zone under propolis-server and needs O(network.type=vnic) or
        V(none). The server's address comes from the environment variable C(VMCTL_PROPOLIS_ADDRESS)
        (default C(127.0.0.1:12400)); C(VMCTL_PROPOLIS_COMMAND_PREFIX) (for example C(pfexec)),
        C(VMCTL_PROPOLIS_BRAND) and C(VMCTL_PROPOLIS_ZONE_ROOT) adjust the illumos commands. See the
        collection's C(docs/propolis.md).
    type: str
    choices: [auto, qemu, propolis, noop]
    default: auto
  accel:
    description: QEMU acceleration. V(auto) uses KVM when C(/dev/kvm) is usable, else TCG; the environment variable C(VMCTL_ACCEL) overrides V(auto).
    type: str
    choices: [auto, kvm, tcg]
    default: auto
  cpu:
    description: QEMU CPU model (default C(host) with KVM, C(max) with TCG).
    type: str
  machine:
    description: QEMU machine type (default C(q35)).
    type: str
  vnc:
    description:
      - Offer a VNC display. By default it is a unix socket, C(vnc.sock) in the VM's work directory (mode 0700),
        so only its owner can reach it (for example C(ssh -L 5900:/path/vnc.sock host), or a viewer that opens unix sockets).
    type: bool
    default: true
  vnc_tcp:
    description:
      - Offer the VNC display on 127.0.0.1 (a free port from 5900) instead, protected by a password that is
        generated at each start and written to C(vnc.password) in the work directory (mode 0600).
      - Any local user can connect to a TCP port; the password is what keeps them out.
    type: bool
    default: false
  kernel:
    description: Boot this Linux kernel directly instead of the disk's boot loader.
    type: path
  initrd:
    description: Initial ramdisk for O(kernel).
    type: path
  kernel_append:
    description: Kernel command line for O(kernel), for example C(console=ttyS0 root=/dev/vda1).
    type: str
  port_forwards:
    description:
      - Host ports forwarded to guest ports over user networking (O(network.type=user)), with QEMU's C(hostfwd).
      - A host port that another VM of the store forwards (or uses for SSH), or that another program holds, is an
        error at create and at start, naming that VM or saying "another program".
      - Adding or removing a forward is an idempotent change; a running VM keeps its old forwards until its next start.
    type: list
    elements: dict
    default: []
    suboptions:
      host:
        description: Host port (1-65535; below 1024 only as root).
        type: int
        required: true
      guest:
        description: Guest port (1-65535).
        type: int
        required: true
      protocol:
        description: Transport protocol.
        type: str
        choices: [tcp, udp]
        default: tcp
      address:
        description:
          - Host IPv4 address to listen on. Another address than V(127.0.0.1) (for example V(0.0.0.0), every
            interface) lets other hosts reach the guest's port, and the task warns about it.
        type: str
        default: 127.0.0.1
  shares:
    description:
      - Host folders shared with the guest over virtio-9p (QEMU C(-virtfs), C(security_model=mapped-xattr)), both ways,
        mounted by the cloud-config vmctl generates (C(mounts:), C(trans=virtio,version=9p2000.L)). With your own
        O(cloud_init.user_data), the folders are attached and you mount them (tags C(vmctl:0), C(vmctl:1), ...).
      - Files the guest creates belong to the host user that runs QEMU; a writable share needs a host filesystem with
        user extended attributes (ext4, xfs, btrfs).
      - A changed host folder is applied at the next start; a changed guest path or readonly needs a new seed
        (O(recreate=true)), as other cloud-init settings do.
    type: list
    elements: dict
    default: []
    suboptions:
      source:
        description: The host folder (it must exist).
        type: path
        required: true
      guest:
        description: Where it is mounted in the guest (an absolute path).
        type: str
        required: true
      readonly:
        description: Mount it read-only (the guest cannot change the host folder).
        type: bool
        default: false
  firmware:
    description:
      - V(bios) (SeaBIOS) or V(uefi) (OVMF from Debian's C(ovmf) package, the CODE and VARS of one build; each VM gets
        its own copy of the VARS in its work directory). A missing OVMF is an error naming the package.
      - The propolis backend always boots its own UEFI bootrom.
    type: str
    choices: [bios, uefi]
    default: bios
  vmfile:
    description: The VMFile this VM is defined in; another VMFile cannot take over a VM of the same name.
    type: path
  private_networks:
    description:
      - Extra NICs, each on a private switch (a rootless C(vde_switch) of the Debian package C(vde2)) that every VM
        of the same O(vmfile) naming that switch joins; VMs without O(vmfile) share one scope. Traffic stays
        between the VMs on the switch (no host interface, no routes). The primary O(network) stays as it is.
      - The switch is started with the first VM on it and stopped with the last; its sockets are under
        C($XDG_DATA_HOME/vmctl/switches/).
      - A change (a network added, removed, or a new address) needs a new seed, so O(recreate=true).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: The switch's name (1 to 32 letters, digits, C(.), C(_) or C(-)).
        type: str
        required: true
      address:
        description:
          - The guest's static address with its prefix length, for example C(192.168.77.11/24), written by
            cloud-init's network-config (version 2) for the NIC, matched by its MAC; it needs O(cloud_init).
          - Two VMs on one switch cannot have the same address. Without it the guest configures the NIC itself.
        type: str
  recreate:
    description: Destroy and create the VM again when a change needs a new disk (its data is lost).
    type: bool
    default: false
  validate_certs:
    description: Verify TLS certificates when downloading O(image_url).
    type: bool
    default: true
  progress_file:
    description:
      - Internal, set by the action plugin of this module; leave it unset. A file to which the download of
        O(image_url) appends a progress line (share, size, rate) about every 5 seconds, for the action plugin to
        show while the task runs.
    type: path
notes:
  - Supports check mode (reports what would change, touches nothing) and diff mode.
  - The VM store is C($XDG_DATA_HOME/vmctl/vms.json); per-VM files live in C($XDG_DATA_HOME/vmctl/vms/<name>/).
seealso:
  - module: vmctl.core.vm_state
  - module: vmctl.core.vm_info
  - module: vmctl.core.vm_image
extends_documentation_fragment:
  - vmctl.core.attributes
  - vmctl.core.attributes.action_group
requirements:
  - QEMU on the host that runs the VM (Debian packages C(qemu-system-x86) and C(qemu-utils)); none for the propolis backend
  - Python packages C(pycdlib), C(PyYAML) and C(cryptography) on that host (cloud-init seed, SSH keys)
  - Python package C(requests) on that host, for O(image_url) and the propolis backend
attributes:
  check_mode:
    description: Reports what would be created, changed or destroyed, and touches nothing.
    support: full
  diff_mode:
    description: Shows the VM's settings before and after.
    support: full
"""

EXAMPLES = r"""
- name: A Debian VM from a cloud image, with a generated key
  vmctl.core.vm:
    name: web
    image_url: https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2
    vcpus: 2
    memory: 2048
    disk: 20
    cloud_init:
      hostname: web
    ssh:
      user: admin

- name: From a local image on a bridge
  vmctl.core.vm:
    name: db
    image: /var/lib/images/debian-12.qcow2
    network:
      type: tap
      bridge: br0

- name: Remove it and its disk
  vmctl.core.vm:
    name: web
    state: absent
"""

RETURN = r"""
vm:
  description: The VM as recorded in the store (absent when it does not exist).
  returned: success
  type: dict
  sample: {"name": "web", "state": "prepared", "vcpus": 2, "memory_mb": 2048, "ssh_host_port": 10041,
           "mac_addr": "52:54:00:12:34:56", "work_dir": "/root/.local/share/vmctl/vms/web",
           "port_forwards": [{"host": 8080, "guest": 80, "protocol": "tcp", "address": "127.0.0.1"}],
           "shares": [{"source": "/home/me/src", "guest": "/mnt/src", "readonly": false}], "firmware": "bios"}
actions:
  description: What was done (or, in check mode, would be done).
  returned: always
  type: list
  elements: str
  sample: ["create"]
image:
  description:
    - The image the VM is based on (path, format, and for O(image_url) the cache details).
    - Its C(sha256) is V(null) for a compressed download that no M(vmctl.core.vm_image) or
      M(vmctl.core.vm_image_info) task hashed yet (this module does not read the whole image for it).
  returned: when O(state=present)
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vmctl.core.plugins.module_utils import forwards, progress, reconcile
from ansible_collections.vmctl.core.plugins.module_utils.manager import VmManager
from ansible_collections.vmctl.core.plugins.module_utils.module import run_module
from ansible_collections.vmctl.core.plugins.module_utils.specs import record_params, resolve_image, spec_from_record
from ansible_collections.vmctl.core.plugins.module_utils.model import validate_name


# the options that describe a VM: a record gives them all
DESCRIBING = ("name", "image_url", "image_checksum", "vcpus", "memory", "disk", "network", "cloud_init", "ssh", "backend",
              "accel", "cpu", "machine", "vnc", "vnc_tcp", "kernel", "initrd", "kernel_append", "vmfile",
              "port_forwards", "shares", "firmware", "private_networks")


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str"),
            record=dict(type="dict"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            image=dict(type="path"),
            image_url=dict(type="str"),
            image_checksum=dict(type="str"),
            vcpus=dict(type="int", default=1),
            memory=dict(type="int", default=1024),
            disk=dict(type="int"),
            network=dict(type="dict", options=dict(
                type=dict(type="str", choices=["user", "tap", "vnic", "none"], default="user"),
                bridge=dict(type="str"),
                name=dict(type="str"),
            )),
            cloud_init=dict(type="dict", options=dict(
                hostname=dict(type="str"),
                ssh_key=dict(type="path"),
                user_data=dict(type="path"),
                generate_key=dict(type="bool", default=True),
            )),
            ssh=dict(type="dict", options=dict(
                user=dict(type="str", default="vm"),
                private_key=dict(type="path", no_log=False),
                host_key_checking=dict(type="str", choices=["yes", "accept-new"], default="yes"),
            )),
            backend=dict(type="str", choices=["auto", "qemu", "propolis", "noop"], default="auto"),
            accel=dict(type="str", choices=["auto", "kvm", "tcg"], default="auto"),
            cpu=dict(type="str"),
            machine=dict(type="str"),
            vnc=dict(type="bool", default=True),
            vnc_tcp=dict(type="bool", default=False),
            kernel=dict(type="path"),
            initrd=dict(type="path"),
            kernel_append=dict(type="str"),
            vmfile=dict(type="path"),
            private_networks=dict(type="list", elements="dict", default=[], options=dict(
                name=dict(type="str", required=True),
                address=dict(type="str"),
            )),
            port_forwards=dict(type="list", elements="dict", default=[], options=dict(
                host=dict(type="int", required=True),
                guest=dict(type="int", required=True),
                protocol=dict(type="str", choices=["tcp", "udp"], default="tcp"),
                address=dict(type="str", default="127.0.0.1"),
            )),
            shares=dict(type="list", elements="dict", default=[], options=dict(
                source=dict(type="path", required=True),
                guest=dict(type="str", required=True),
                readonly=dict(type="bool", default=False),
            )),
            firmware=dict(type="str", choices=["bios", "uefi"], default="bios"),
            recreate=dict(type="bool", default=False),
            validate_certs=dict(type="bool", default=True),
            progress_file=dict(type="path"),
        ),
        mutually_exclusive=[("image", "image_url")] + [("record", key) for key in DESCRIBING],
        required_one_of=[("name", "record")],
        required_if=[("state", "present", ("image", "image_url", "record"), True)],
        required_by={"image_checksum": "image_url", "initrd": "kernel", "kernel_append": "kernel"},
        supports_check_mode=True,
    )
    run_module(module, _run)


def _run(module):
    p = module.params
    if p["record"] is not None:
        p = record_params(p["record"], image=p["image"], state=p["state"], recreate=p["recreate"],
                          validate_certs=p["validate_certs"])
    manager = VmManager()
    if p["state"] == "absent":
        outcome = reconcile.ensure_absent(manager, p["name"], check_mode=module.check_mode)
        return _result(outcome, module)
    validate_name(p["name"])
    with progress.ProgressFile(module.params["progress_file"]) as report:
        image = resolve_image(p["image"], p["image_url"], p["image_checksum"], validate_certs=p["validate_certs"],
                              check_mode=module.check_mode,
                              progress=progress.DownloadProgress("downloading %s" % p["image_url"], report))
    spec = spec_from_record(p, image["path"], image.get("format"))
    for warning in forwards.exposure_warnings(spec.name, spec.port_forwards):
        module.warn(warning)
    outcome = reconcile.ensure_present(manager, spec, recreate=p["recreate"], check_mode=module.check_mode)
    return _result(outcome, module, image=image)


def _result(outcome, module, **extra):
    result = dict(changed=outcome.changed, actions=outcome.actions, **extra)
    if outcome.handle is not None:
        result["vm"] = outcome.handle.to_json()
    if module._diff:
        result["diff"] = outcome.diff
    return result


if __name__ == "__main__":
    main()
