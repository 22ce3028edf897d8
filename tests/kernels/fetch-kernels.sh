#!/usr/bin/env bash
# Fetches the Debian kernels of the test matrix without touching the host's apt state: a
# private apt configuration (its own sources, lists, cache and status) names the suites,
# `apt-get download` fetches the newest image package of each series, `dpkg -x` unpacks it.
# Kernels are cached in $KERNEL_CACHE (default /var/cache/osquery-ebpf/kernels); prints one
# line per kernel: "SERIES VMLINUZ". ARCH=arm64 fetches the arm64 images (default amd64).
# EXTRA_PACKAGES="busybox-static" also fetches and unpacks those packages of ARCH (from
# trixie), one line each: "package NAME DIR".
set -euo pipefail
cache=${KERNEL_CACHE:-/var/cache/osquery-ebpf/kernels}
arch=${ARCH:-amd64}
apt_root=$cache/apt
[ "$arch" = amd64 ] || apt_root=$cache/apt-$arch
mkdir -p "$apt_root/lists/partial" "$apt_root/archives/partial" "$cache/debs" "$cache/unpacked"
touch "$apt_root/status"
# bullseye-security's arm64 files cannot be downloaded from here (404): arm64 takes 5.10 from
# bullseye itself
bullseye="debian-security bullseye-security"
[ "$arch" = amd64 ] || bullseye="debian bullseye"
cat > "$apt_root/sources.list" <<SOURCES
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/${bullseye% *} ${bullseye#* } main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
SOURCES
apt_opts=(
  -o "Dir::Etc::SourceList=$apt_root/sources.list"
  -o "Dir::Etc::SourceParts=/nonexistent"
  -o "Dir::State=$apt_root"
  -o "Dir::State::Lists=$apt_root/lists"
  -o "Dir::State::status=$apt_root/status"
  -o "Dir::Cache=$apt_root"
  -o "Dir::Cache::archives=$apt_root/archives"
  -o "APT::Architecture=$arch"
  -o "APT::Get::List-Cleanup=0"
  -o "Debug::NoLocking=1"
)
# refresh the package lists at most once a day
if [ -z "$(find "$apt_root/lists" -name '*Packages*' -mtime -1 2>/dev/null | head -1)" ]; then
  apt-get "${apt_opts[@]}" -qq update >&2
fi

# series -> package-name pattern (the newest matching package is taken)
declare -A pattern=(
  [5.10]="^linux-image-5\\.10\\.0-[0-9]+-$arch-unsigned\$"
  [6.1]="^linux-image-6\\.1\\.0-[0-9]+-$arch-unsigned\$"
  [6.12]="^linux-image-6\\.12\\.[0-9]+\\+deb13-$arch-unsigned\$"
  [7.3]="^linux-binary(-unsigned)?-7\\.3\\.[0-9]+\\+deb13-$arch\$|^linux-image-7\\.3\\.[0-9]+\\+deb13-$arch-unsigned\$"
)
for series in ${SERIES-5.10 6.1 6.12 7.3}; do
  pkg=$(apt-cache "${apt_opts[@]}" pkgnames | grep -E "${pattern[$series]}" | sort -V | tail -1 || true)
  if [ -z "$pkg" ]; then
    echo "no Debian kernel package for $series" >&2
    exit 1
  fi
  dir=$cache/unpacked/$pkg
  if [ ! -f "$dir/vmlinuz" ]; then
    (cd "$cache/debs" && apt-get "${apt_opts[@]}" -qq download "$pkg" 2>&1 | grep -v unsandboxed >&2 || true)
    deb=$(ls -t "$cache/debs/${pkg}"_*.deb | head -1)
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    dpkg -x "$deb" "$dir.tmp"
    # /boot/vmlinuz-* in older packages, /usr/lib/modules/*/vmlinuz* in newer ones
    image=$(find "$dir.tmp" -type f -name 'vmlinuz*' | head -1)
    [ -n "$image" ] || { echo "no kernel image in $deb" >&2; exit 1; }
    rm -rf "$dir" && mkdir -p "$dir"
    mv "$image" "$dir/vmlinuz"
    rm -rf "$dir.tmp" "$deb" # modules are not needed: BPF, tracepoints and netns are built in
  fi
  echo "$series $dir/vmlinuz"
done

for pkg in ${EXTRA_PACKAGES:-}; do
  dir=$cache/unpacked/$pkg-$arch
  if [ ! -d "$dir" ]; then
    (cd "$cache/debs" && apt-get "${apt_opts[@]}" -qq download "$pkg" 2>&1 | grep -v unsandboxed >&2 || true)
    deb=$(ls -t "$cache/debs/${pkg}"_*_"$arch".deb | head -1)
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp" && dpkg -x "$deb" "$dir.tmp" && mv "$dir.tmp" "$dir"
    rm -f "$deb"
  fi
  echo "package $pkg $dir"
done
