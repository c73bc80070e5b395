#!/bin/bash
# First process of the e2e lab's private namespaces (pid, mount, uts, ipc, cgroup, net), started by
# systemd_lab.py. It builds a throw-away root — a tmpfs-backed overlay over the host's "/" — with
# its own /proc, read-only /sys, a cgroup2 tree rooted at the lab's cgroup and a minimal /dev,
# switches into it and becomes /lib/systemd/systemd (PID 1). Nothing of the host is modified.
set -euo pipefail
work=${LAB_WORK:?}
console=$work/console.log

mount -t tmpfs -o mode=0755,size=16m lab-run /run          # keep mount helpers off the host /run
ip link set lo up 2>/dev/null || true
hostname pipelined-lab

layers=$work/layers
mkdir -p "$layers"
mount -t tmpfs -o mode=0755,size=2g lab-layers "$layers"
mkdir -p "$layers/upper" "$layers/work" "$layers/root"
mount -t overlay lab-root -o "lowerdir=/,upperdir=$layers/upper,workdir=$layers/work" "$layers/root"
root=$layers/root

mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount --bind "$root/proc/sys" "$root/proc/sys"
mount -o remount,bind,ro "$root/proc/sys"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$root/sys/fs/cgroup"

mount -t tmpfs -o mode=0755,nosuid,size=64k lab-dev "$root/dev"
for node in null zero full random urandom tty; do
  touch "$root/dev/$node"
  mount --bind "/dev/$node" "$root/dev/$node"
done
mkdir -p "$root/dev/pts" "$root/dev/shm" "$root/dev/mqueue"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev lab-shm "$root/dev/shm"
ln -s /proc/self/fd "$root/dev/fd"
touch "$root/dev/console"
mount --bind "$console" "$root/dev/console"
mount -t tmpfs -o mode=1777,nosuid,nodev lab-tmp "$root/tmp"
mount -t tmpfs -o mode=1777,nosuid,nodev lab-vartmp "$root/var/tmp"
# the checkout under test, wherever it lives (CI clones may sit under /tmp, which is fresh here,
# or on a mount the overlay of "/" does not show)
if [ -n "${LAB_BIND:-}" ] && [ -d "$LAB_BIND" ]; then
  mkdir -p "$root$LAB_BIND"
  mount --bind "$LAB_BIND" "$root$LAB_BIND"
fi

# what this systemd boots into: basic.target and nothing of the host's services
units=$root/etc/systemd/system
mkdir -p "$units" "$root/etc/systemd/system.conf.d" "$root/etc/systemd/journald.conf.d"
printf '[Manager]\nShowStatus=no\nDefaultTimeoutStopSec=15s\n' > "$root/etc/systemd/system.conf.d/lab.conf"
printf '[Journal]\nStorage=volatile\n' > "$root/etc/systemd/journald.conf.d/lab.conf"
printf '[Unit]\nDescription=pipelined e2e lab\nRequires=basic.target\nAfter=basic.target\nAllowIsolate=yes\n' \
  > "$units/pipelined-lab.target"
for unit in getty@.service console-getty.service serial-getty@.service systemd-timesyncd.service \
            systemd-networkd.service systemd-resolved.service postgresql.service cron.service \
            apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
            man-db.timer logrotate.timer dpkg-db-backup.timer; do
  ln -sf /dev/null "$units/$unit"
done
rm -f "$units/pipelined.service"   # never the host's installed unit: the test installs its own

cd "$root"
mkdir -p .host
pivot_root . .host
cd /
umount -l /.host
rmdir /.host
# systemd leaves propagation alone in a container (container= below), but needs it shared: a
# service's credentials (LoadCredential=) are mounted by a helper in its own mount namespace and
# reach /run/credentials only through propagation. Every mount here is the lab's own (the
# namespace was unshared with private propagation), so nothing propagates to the host.
mount --make-rshared /
exec /usr/bin/env -i container=pipelined-lab PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  LANG=C.UTF-8 /usr/bin/setpriv --bounding-set -sys_module,-sys_time,-sys_rawio,-wake_alarm \
  /lib/systemd/systemd --unit=pipelined-lab.target --show-status=no
