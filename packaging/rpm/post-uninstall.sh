# rpm %postun: on erase ($1 = 0, not an upgrade), take the extension out of the autoload file.
EXT=/usr/lib/osquery-ebpf/osquery-ebpf.ext
LOAD=/etc/osquery/extensions.load
if [ "$1" -eq 0 ] && [ -f "$LOAD" ]; then
  grep -vxF "$EXT" "$LOAD" > "$LOAD.tmp" || true
  cat "$LOAD.tmp" > "$LOAD"
  rm -f "$LOAD.tmp"
fi
exit 0
