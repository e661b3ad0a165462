"""`mount.clawfs`: what mount(8) runs for `mount -t clawfs STORE DIR -o OPTS` and for fstab lines of type
clawfs.  mount(8) calls it as `mount.clawfs STORE DIR [-sfnv] [-o OPTS]`; we translate to `clawfs mount`."""

from __future__ import annotations

import sys

from . import cli


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    positional: list[str] = []
    opts: list[str] = []
    verbose = False
    i = 0
    while i < len(args):
        a = args[i]
        if a == "-o" and i + 1 < len(args):
            opts.append(args[i + 1])
            i += 2
            continue
        if a.startswith("-o") and len(a) > 2:
            opts.append(a[2:])
        elif a == "-v":
            verbose = True
        elif a in ("-s", "-f", "-n") or a.startswith("-t"):
            pass  # sloppy, fake and no-mtab are mount(8)'s business; -t is the type we already are
        else:
            positional.append(a)
        i += 1
    if len(positional) != 2:
        sys.stderr.write("usage: mount.clawfs STORE MOUNTPOINT [-o OPTIONS]\n")
        sys.exit(2)
    cli.main(([] if not verbose else ["-v"]) + ["mount", *positional] + [x for o in opts for x in ("-o", o)])
