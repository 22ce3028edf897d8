# rpm %post: list the extension in osquery's autoload file (created if missing), once.
EXT=/usr/lib/osquery-ebpf/osquery-ebpf.ext
LOAD=/etc/osquery/extensions.load
mkdir -p /etc/osquery
touch "$LOAD"
grep -qxF "$EXT" "$LOAD" || echo "$EXT" >> "$LOAD"
exit 0
