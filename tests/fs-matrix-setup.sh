# Mounts of the filesystem matrix, made in the current directory. Sourced
# by tests/tests/filesystems.rs and crates/cli/tests/filesystems.rs,
# each inside its own private mount namespace (`unshare -m`).
set -eu
export PATH="$PATH:/usr/sbin:/sbin"
truncate -s 300M btrfs.img xfs.img ext4.img
mkfs.btrfs -q btrfs.img
mkfs.xfs -q xfs.img >&2
mkfs.ext4 -q -F ext4.img
mkdir -p tmpfs ext4 btrfs xfs lower upper work merged bind stack "odd name
x" fuse
mount -t tmpfs t tmpfs
mount -o loop ext4.img ext4
mount -o loop btrfs.img btrfs
btrfs -q subvolume create btrfs/sub
mount -o loop xfs.img xfs
touch lower/in-lower.lock
mount -t overlay overlay -o lowerdir=lower,upperdir=upper,workdir=work merged
touch merged/in-upper.lock
mkdir -p ext4/inner && mount --bind ext4/inner bind
mount -t tmpfs bottom stack && touch stack/bottom-only && mount -t tmpfs top stack
mount -t tmpfs odd "odd name
x"
bindfs --no-allow-other lower fuse
