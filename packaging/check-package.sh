#!/usr/bin/env bash
# Checks a built package (.deb or .rpm, x86_64 or arm64) against osquery's autoload rules,
# checks that its binary is built for the package's architecture, then runs the packaged
# binary (an arm64 one under qemu-user).
# Usage: packaging/check-package.sh target/debian/osquery-ebpf_*.deb
#        packaging/check-package.sh target/generate-rpm/osquery-ebpf-*.rpm
set -euo pipefail
pkg=${1:?usage: check-package.sh PACKAGE.deb|PACKAGE.rpm}
fail() { echo "package check failed ($pkg): $*" >&2; exit 1; }
EXT=/usr/lib/osquery-ebpf/osquery-ebpf.ext
CONF=/etc/osquery-ebpf/osquery-ebpf.toml

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# One line per packaged path: "MODE OWNER/GROUP /PATH"
case "$pkg" in
  *.deb)
    listing=$(dpkg-deb -c "$pkg" | awk '{ p = $6; sub(/^\./, "", p); print $1, $2, p }')
    [ "$(dpkg-deb -f "$pkg" Package)" = osquery-ebpf ] || fail "package name"
    dpkg-deb -I "$pkg" conffiles | grep -qx "$CONF" || fail "the config is not a conffile"
    scripts=$(dpkg-deb -I "$pkg" postinst)
    arch=$(dpkg-deb -f "$pkg" Architecture)
    dpkg-deb -x "$pkg" "$work"
    ;;
  *.rpm)
    bash "$(dirname "$0")/install-build-deps.sh" rpm
    q() { rpm -qp --nosignature "$@" "$pkg"; }
    listing=$(q -lv | awk '{ print $1, $3 "/" $4, $NF }')
    [ "$(q --qf '%{NAME}')" = osquery-ebpf ] || fail "package name"
    q -c | grep -qx "$CONF" || fail "the config is not a %config file"
    [ "$(q --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' | awk -v c="$CONF" '$2 == c { print $1 }')" = cn ] \
      || fail "the config is not %config(noreplace)"
    scripts=$(q --scripts)
    arch=$(q --qf '%{ARCH}')
    rpm -K --nosignature "$pkg" >/dev/null || fail "digests do not match"
    # install it for real (files only) into a scratch root: rpm accepts it, and makes the
    # directories it does not list 0755 root:root
    rpm --root "$work" --initdb
    # (--ignorearch: an aarch64 package is checked on an x86_64 host)
    rpm -i --root "$work" --nodeps --noscripts --ignorearch "$pkg" 2>/dev/null || fail "rpm -i refused it"
    [ "$(stat -c '%a %U' "$work${EXT%/*}")" = "755 root" ] || fail "binary directory mode/owner"
    ;;
  *) fail "not a .deb or .rpm" ;;
esac

entry() { grep -E "^[^ ]+ [^ ]+ $1\$" <<<"$listing" || fail "$1 missing from the package"; }
# osquery autoloads a file only if it ends in .ext, is executable, owned by root and not
# writable by others, in a directory that is not sticky or world-writable
[[ $(entry "$EXT") =~ ^-rwxr-xr-x\ (root/root|0/0)\  ]] || fail "binary mode/owner: $(entry "$EXT")"
if [[ $pkg == *.deb ]]; then # (the .rpm's directory was checked after installing it)
  [[ $(entry "${EXT%/*}/") =~ ^drwxr-xr-x\ (root/root|0/0)\  ]] || fail "binary directory mode/owner"
fi
[[ $(entry "$CONF") =~ ^-rw-r--r--\ (root/root|0/0)\  ]] || fail "config mode/owner: $(entry "$CONF")"
entry /usr/share/osquery-ebpf/osquery-ebpf-pack.conf >/dev/null
grep -q "$EXT" <<<"$scripts" || fail "the install script does not list the extension"

grep -qxF "$EXT" "$work/usr/share/osquery-ebpf/extensions.load" \
  || fail "extensions.load does not name the installed binary"
# the binary is built for the package's architecture
case "$arch" in
  amd64 | x86_64) machine="Advanced Micro Devices X86-64" run=() ;;
  arm64 | aarch64) machine="AArch64" run=(qemu-aarch64 -L /usr/aarch64-linux-gnu) ;;
  *) fail "unknown package architecture $arch" ;;
esac
got=$(readelf -h "$work$EXT" | sed -n 's/^ *Machine: *//p')
[ "$got" = "$machine" ] || fail "the binary is for $got, the package for $arch"
# the packaged binary runs (a foreign one under qemu-user), needs only libc, libgcc_s and
# the loader, and reads the packaged config
schema=$(OSQUERY_EBPF_CONFIG="$work$CONF" "${run[@]}" "$work$EXT" schema) \
  || fail "the packaged binary failed"
grep -q "CREATE TABLE bpf_process_events_v2(" <<<"$schema" \
  || fail "the packaged binary did not print the schema"
needed=$(readelf -d "$work$EXT" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p')
if grep -vE '^(libc\.so\.6|libgcc_s\.so\.1|ld-linux-(x86-64|aarch64)\.so\.[12])$' <<<"$needed" | grep -q .; then
  fail "unexpected shared libraries: $(tr '\n' ' ' <<<"$needed")"
fi
echo "package check passed: $pkg"
