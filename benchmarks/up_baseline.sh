#!/usr/bin/env bash
# Baseline for benchmarks/up.py: what `ansible-playbook vmctl.core.up` does for one VM, written by hand.
#
#   up_baseline.sh up DIR BASE PORT ACCEL CPU VCPUS MEMORY_MB COMMAND FILE DEST
#   up_baseline.sh down DIR
#
# up: ed25519 user key and host key, qcow2 overlay on BASE, NoCloud seed ISO (user + key + hostname, and the
# host key, pinned in known_hosts, as the engine does: without it cloud-init generates four host keys, ~6 s
# under TCG), QEMU with the engine's
# options (plugins/module_utils/backends/qemu/backend.py: q35, ACCEL, CPU, virtio disk, virtio-rng, virtio-net on a
# user netdev forwarding 127.0.0.1:PORT to 22, daemonized), then ssh every second until a login works and
# `cloud-init status --wait` has returned, then COMMAND over ssh and scp of FILE to DEST.
# Prints "phase SECONDS" lines (since the start) on stdout. down: kill QEMU, remove DIR.
set -euo pipefail

if [ "$1" = down ]; then
  dir=$2
  if [ -f "$dir/qemu.pid" ]; then
    pid=$(cat "$dir/qemu.pid")
    kill "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  rm -rf "$dir"
  exit 0
fi

[ "$1" = up ] || { echo "usage: $0 up DIR BASE PORT ACCEL CPU VCPUS MEMORY_MB COMMAND FILE DEST | down DIR" >&2; exit 2; }
dir=$2 base=$3 port=$4 accel=$5 cpu=$6 vcpus=$7 memory=$8 command=$9 file=${10} dest=${11}
start=$(date +%s.%N)
phase() { awk -v name="$1" -v s="$start" -v now="$(date +%s.%N)" 'BEGIN { printf "%s %.2f\n", name, now - s }'; }

mkdir -p "$dir"
ssh-keygen -q -t ed25519 -N '' -C baseline -f "$dir/id"
ssh-keygen -q -t ed25519 -N '' -C baseline-host -f "$dir/host"
echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$dir/host.pub")" > "$dir/known_hosts"
qemu-img create -q -f qcow2 -b "$base" -F qcow2 "$dir/overlay.qcow2"
cat > "$dir/user-data" <<EOF
#cloud-config
users:
  - name: bench
    sudo: ALL=(ALL) NOPASSWD:ALL
    shell: /bin/bash
    ssh_authorized_keys:
      - $(cat "$dir/id.pub")
hostname: baseline
manage_etc_hosts: true
ssh_deletekeys: true
ssh_keys:
  ed25519_private: |
$(sed 's/^/    /' "$dir/host")
  ed25519_public: $(cat "$dir/host.pub")
EOF
printf 'instance-id: baseline-%s\nlocal-hostname: baseline\n' "$$" > "$dir/meta-data"
genisoimage -quiet -output "$dir/seed.iso" -volid cidata -joliet -rock "$dir/user-data" "$dir/meta-data"
phase prepared

qemu-system-x86_64 -name baseline -machine "q35,accel=$accel" -cpu "$cpu" -smp "$vcpus" -m "$memory" \
  -drive "file=$dir/overlay.qcow2,if=virtio,format=qcow2,discard=unmap" -device virtio-rng-pci \
  -serial "file:$dir/console.log" -display none -pidfile "$dir/qemu.pid" -daemonize \
  -drive "file=$dir/seed.iso,if=virtio,format=raw,readonly=on" \
  -netdev "user,id=net0,hostfwd=tcp:127.0.0.1:$port-:22" -device virtio-net-pci,netdev=net0
phase started

ssh_opts=(-o StrictHostKeyChecking=yes -o "UserKnownHostsFile=$dir/known_hosts" -o BatchMode=yes
          -o IdentitiesOnly=yes -o ConnectTimeout=10 -i "$dir/id")
deadline=$(( $(date +%s) + 600 ))
until ssh "${ssh_opts[@]}" -p "$port" bench@127.0.0.1 'cloud-init status --wait >/dev/null; true' 2>/dev/null; do
  [ "$(date +%s)" -lt "$deadline" ] || { echo "baseline: no ssh after 600 s" >&2; exit 1; }
  sleep 1
done
phase ready

ssh "${ssh_opts[@]}" -p "$port" bench@127.0.0.1 "$command" >/dev/null
scp -q "${ssh_opts[@]}" -P "$port" "$file" "bench@127.0.0.1:$dest"
phase provisioned
