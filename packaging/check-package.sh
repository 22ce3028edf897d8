#!/usr/bin/env bash
# Checks a built package (.deb or .rpm) against osquery's autoload rules, then runs the
# packaged binary.
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
    rpm -K --nosignature "$pkg" >/dev/null || fail "digests do not match"
    # install it for real (files only) into a scratch root: rpm accepts it, and makes the
    # directories it does not list 0755 root:root
    rpm --root "$work" --initdb
    rpm -i --root "$work" --nodeps --noscripts "$pkg" 2>/dev/null || fail "rpm -i refused it"
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
# the packaged binary runs, needs only libc (and libgcc_s), and reads the packaged config
schema=$(OSQUERY_EBPF_CONFIG="$work$CONF" "$work$EXT" schema) || fail "the packaged binary failed"
grep -q "CREATE TABLE bpf_process_events_v2(" <<<"$schema" \
  || fail "the packaged binary did not print the schema"
if ldd "$work$EXT" | grep -vE 'linux-vdso|libc\.so|libgcc_s|ld-linux' | grep -q '=>'; then
  fail "unexpected shared libraries: $(ldd "$work$EXT")"
fi
echo "package check passed: $pkg"
