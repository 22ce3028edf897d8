#!/usr/bin/env bash
# Checks a built .deb against osquery's autoload rules and runs the packaged binary.
# Usage: packaging/check-package.sh target/debian/osquery-ebpf_*.deb
set -euo pipefail
deb=${1:?usage: check-package.sh PACKAGE.deb}
fail() { echo "package check failed: $*" >&2; exit 1; }

listing=$(dpkg-deb -c "$deb")
line() { grep -E " \./$1\$" <<<"$listing" || fail "$1 missing from the package"; }

ext=$(line "usr/lib/osquery-ebpf/osquery-ebpf.ext")
# osquery autoloads a file only if it ends in .ext, is executable, owned by root and not
# writable by others, in a directory that is not sticky or world-writable
[[ $ext =~ ^-rwxr-xr-x\ (root/root|0/0)\  ]] || fail "binary mode/owner: $ext"
dir=$(line "usr/lib/osquery-ebpf/")
[[ $dir =~ ^drwxr-xr-x\ (root/root|0/0)\  ]] || fail "binary directory mode/owner: $dir"
conf=$(line "etc/osquery-ebpf/osquery-ebpf.toml")
[[ $conf =~ ^-rw-r--r--\ (root/root|0/0)\  ]] || fail "config mode/owner: $conf"
line "usr/share/osquery-ebpf/osquery-ebpf-pack.conf" >/dev/null
dpkg-deb -f "$deb" Package | grep -qx osquery-ebpf || fail "package name"
dpkg-deb -I "$deb" conffiles | grep -qx /etc/osquery-ebpf/osquery-ebpf.toml || fail "config is not a conffile"
dpkg-deb -I "$deb" postinst | grep -q "/usr/lib/osquery-ebpf/osquery-ebpf.ext" || fail "postinst does not list the extension"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$deb" "$work"
grep -qxF /usr/lib/osquery-ebpf/osquery-ebpf.ext "$work/usr/share/osquery-ebpf/extensions.load" \
  || fail "extensions.load does not name the installed binary"
# the packaged binary runs, needs only libc (and libgcc_s), and reads the packaged config
OSQUERY_EBPF_CONFIG="$work/etc/osquery-ebpf/osquery-ebpf.toml" \
  "$work/usr/lib/osquery-ebpf/osquery-ebpf.ext" schema | grep -q "CREATE TABLE bpf_process_events_v2(" \
  || fail "the packaged binary did not print the schema"
if ldd "$work/usr/lib/osquery-ebpf/osquery-ebpf.ext" | grep -vE 'linux-vdso|libc\.so|libgcc_s|ld-linux' | grep -q '=>'; then
  fail "unexpected shared libraries: $(ldd "$work/usr/lib/osquery-ebpf/osquery-ebpf.ext")"
fi
echo "package check passed: $deb"
