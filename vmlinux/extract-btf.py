#!/usr/bin/env python3
"""Cut the kernel's BTF blob out of an uncompressed arm64 kernel Image (Debian's -unsigned
images are raw Images; the blob backing /sys/kernel/btf/vmlinux sits in them verbatim).

    python3 vmlinux/extract-btf.py IMAGE OUT.btf

Finds the BTF header (magic 0xeb9f, version 1, hdr_len 24, type_off 0, str_off == type_len)
and writes hdr_len + type_len + str_len bytes from there.
"""
import struct
import sys


def main() -> None:
    image, out = sys.argv[1], sys.argv[2]
    data = open(image, "rb").read()
    at = 0
    while True:
        at = data.find(b"\x9f\xeb\x01\x00", at)
        if at < 0:
            sys.exit(f"no BTF header in {image}")
        hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<IIIII", data, at + 4)
        if hdr_len == 24 and type_off == 0 and str_off == type_len and type_len > 1 << 20:
            size = hdr_len + type_len + str_len
            open(out, "wb").write(data[at : at + size])
            print(f"{out}: {size} bytes of BTF at offset {at:#x}")
            return
        at += 4


if __name__ == "__main__":
    main()
