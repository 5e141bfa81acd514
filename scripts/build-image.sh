#!/usr/bin/env bash
# Build a flashable pi-synth SD card image from a Raspberry Pi OS Lite (arm64) image.
#
#   sudo scripts/build-image.sh 2025-05-13-raspios-bookworm-arm64-lite.img.xz -o pi-synth.img \
#        [--hat hifiberry-dac|hifiberry-dacplus|iqaudio-dacplus|pisound|usb|none] [--no-onboard-audio]
#        [--read-only] [--install-in-image [--grow MB]] [--xz]
#
# Steps: unpack (.img.xz) or copy (.img) to the output → find the boot (FAT) and root
# (ext4) partitions with sfdisk → loop-mount each at its offset (no partition scanning
# or kpartx needed, so it works in containers) → scripts/provision.py --root on the
# mounted root → unmount → a flashable .img (or .img.xz with --xz).
#
# By default apt packages and the venv are left to the first boot (pi-synth-firstboot.service:
# the Pi needs network once, then reboots into the instrument if --read-only). With
# --install-in-image they are installed now, inside the image, under proot + qemu-aarch64-static
# (slow on x86: tens of minutes) after growing the root partition by --grow MB (default 1536).
# Flash with Raspberry Pi Imager ("Use custom") to set the login user, Wi-Fi and SSH.
# Needs root, util-linux (losetup, sfdisk, mount), e2fsprogs; xz-utils for .xz;
# proot + qemu-user-static for --install-in-image. Exit 2 on bad arguments, 1 on failure.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "build-image: $*" >&2; exit 2; }

input="" output="" xz=0 install=0 grow=1536
prov_args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        -o|--output) [[ $# -ge 2 ]] || die "-o needs a file name"; output="$2"; shift 2 ;;
        --hat) [[ $# -ge 2 ]] || die "--hat needs a name"; prov_args+=(--hat "$2"); shift 2 ;;
        --no-onboard-audio|--read-only) prov_args+=("$1"); shift ;;
        --install-in-image) install=1; shift ;;
        --grow) [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || die "--grow needs a size in MB"; grow="$2"; shift 2 ;;
        --xz) xz=1; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) [[ -z "$input" ]] || die "one input image only (got $input and $1)"; input="$1"; shift ;;
    esac
done
[[ -n "$input" ]] || die "no input image; usage: build-image.sh RASPIOS.img[.xz] -o OUT.img (see --help)"
[[ -f "$input" ]] || die "$input: no such file"
[[ -n "$output" ]] || die "no output: pass -o OUT.img"
[[ "$output" == *.img ]] || die "-o must end in .img (add --xz for OUT.img.xz)"
[[ "$(realpath -m "$input")" != "$(realpath -m "$output")" ]] || die "the output must not be the input"
case "$input" in *.img|*.img.xz) ;; *) die "$input: expected a .img or .img.xz" ;; esac
[[ "$(id -u)" -eq 0 ]] || die "loop-mounting needs root: sudo $0 ..."
for tool in losetup sfdisk mount umount python3; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install util-linux fdisk python3)"
done
[[ "$input" != *.xz && $xz -eq 0 ]] || command -v xz >/dev/null || die "xz is missing (apt-get install xz-utils)"
if [[ $install -eq 1 ]]; then
    command -v proot >/dev/null || die "--install-in-image needs proot (apt-get install proot)"
    command -v qemu-aarch64-static >/dev/null || command -v qemu-aarch64 >/dev/null \
        || die "--install-in-image needs qemu-user-static"
else
    prov_args+=(--skip-apt)
fi

t0=$(date +%s)
echo "build-image: $input → $output"
if [[ "$input" == *.xz ]]; then
    xz -dc -T0 "$input" > "$output"
else
    cp --sparse=always "$input" "$output"
fi

if [[ $install -eq 1 && $grow -gt 0 ]]; then
    echo "build-image: growing the root partition by $grow MB"
    truncate -s +"${grow}M" "$output"
    echo ", +" | sfdisk -q -N 2 --no-reread --no-tell-kernel "$output"
fi

# partition offsets (bytes) from the table: 1 = boot (FAT), 2 = root (ext4)
read -r boot_off boot_size root_off root_size < <(sfdisk --json "$output" | python3 -c '
import json, sys
t = json.load(sys.stdin)["partitiontable"]
ss = t.get("sectorsize", 512)
p = t["partitions"]
if len(p) < 2:
    sys.exit("expected a boot and a root partition (a Raspberry Pi OS image)")
print(p[0]["start"] * ss, p[0]["size"] * ss, p[1]["start"] * ss, p[1]["size"] * ss)
') || { echo "build-image: $output has no Raspberry Pi OS partition table" >&2; rm -f "$output"; exit 2; }

mnt="$(mktemp -d /tmp/pi-synth-image.XXXXXX)"
loops=()
cleanup() {
    set +e
    mountpoint -q "$mnt/boot/firmware" && umount "$mnt/boot/firmware"
    mountpoint -q "$mnt" && umount "$mnt"
    for l in "${loops[@]}"; do losetup -d "$l"; done
    rmdir "$mnt" 2>/dev/null
}
trap cleanup EXIT

root_loop=$(losetup --find --show --offset "$root_off" --sizelimit "$root_size" "$output")
loops+=("$root_loop")
if [[ $install -eq 1 && $grow -gt 0 ]]; then
    e2fsck -p -f "$root_loop" >/dev/null || [[ $? -le 1 ]]
    resize2fs "$root_loop" >/dev/null
fi
mount "$root_loop" "$mnt"
[[ -e "$mnt/etc/os-release" ]] || { echo "build-image: partition 2 is not a Linux root" >&2; exit 2; }
boot_dir="$mnt/boot/firmware"
[[ -d "$boot_dir" ]] || boot_dir="$mnt/boot"
boot_loop=$(losetup --find --show --offset "$boot_off" --sizelimit "$boot_size" "$output")
loops+=("$boot_loop")
fat=""
if ! mount -t vfat "$boot_loop" "$boot_dir" 2>/dev/null; then
    # a kernel without vfat (some containers): edit the boot partition's files with mtools
    command -v mcopy >/dev/null || die "this kernel cannot mount FAT and mtools is missing (apt-get install mtools)"
    echo "build-image: this kernel cannot mount FAT: editing the boot partition with mtools"
    export MTOOLS_SKIP_CHECK=1
    fat="$output@@$boot_off"
    boot_dir="$(mktemp -d /tmp/pi-synth-boot.XXXXXX)"
    for f in config.txt cmdline.txt pi-synth.toml; do
        mcopy -n -i "$fat" "::$f" "$boot_dir/" 2>/dev/null || true
    done
    mcopy -s -n -i "$fat" ::pi-synth "$boot_dir/" 2>/dev/null || true
    prov_args+=(--boot "$boot_dir")
fi
[[ -f "$boot_dir/config.txt" ]] || { echo "build-image: partition 1 has no config.txt" >&2; exit 2; }

python3 "$here/provision.py" --root "$mnt" "${prov_args[@]}"
if [[ -n "$fat" ]]; then
    ( cd "$boot_dir" && mcopy -s -o -i "$fat" -- * :: )
    rm -rf "$boot_dir"
fi
sync
cleanup
trap - EXIT
set -e

if [[ $xz -eq 1 ]]; then
    xz -f -T0 -6 "$output"
    output="$output.xz"
fi
echo "build-image: wrote $output in $(( $(date +%s) - t0 )) s; flash it with Raspberry Pi Imager (Use custom)"
