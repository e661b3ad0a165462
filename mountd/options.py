"""Mount options: the `-o a,b=c` string of `clawfs mount`, mount(8) and fstab, split into what ClawFS uses,
what goes on to the kernel through libfuse, and what mount(8) and systemd keep for themselves."""

from __future__ import annotations

from dataclasses import dataclass, field

from clawfs.errors import UserError

# Options libfuse passes on to the kernel mount (fuse_mount_opts); anything else would make fuse_session_new fail.
KERNEL_FLAGS = {
    "ro", "rw", "suid", "nosuid", "dev", "nodev", "exec", "noexec", "async", "sync", "dirsync", "atime",
    "noatime", "diratime", "nodiratime", "relatime", "norelatime", "strictatime", "nostrictatime", "lazytime",
    "nolazytime", "allow_other", "auto_unmount", "default_permissions",
}
# Understood by mount(8), fstab or systemd, meaningless to the filesystem.
IGNORED = {"defaults", "auto", "noauto", "nofail", "_netdev", "user", "users", "nouser", "owner", "group",
           "silent", "loud", "bg", "fg"}
IGNORED_PREFIXES = ("x-", "comment=", "_")
VALUE_KEYS = ("passphrase_file", "keyfile", "recovery_key_file", "log_file", "tpm_tcti", "tpm_pin_file")
ID_KEYS = ("agent_uid", "agent_gid")  # who besides the owner reaches the mount (clawfs/policy.py)
FLAGS = {"ro", "rw", "debug", "accept_rollback", "notpm", "noindex"}


@dataclass
class MountOptions:
    passphrase_file: str | None = None
    keyfile: str | None = None
    recovery_key_file: str | None = None
    readonly: bool = False
    log_file: str | None = None
    tpm_tcti: str | None = None
    tpm_pin_file: str | None = None
    use_tpm: bool = True
    accept_rollback: bool = False
    index: bool = True
    debug: bool = False
    agent_uid: int | None = None
    agent_gid: int | None = None
    fuse: list[str] = field(default_factory=list)


def _split(text: str) -> list[str]:
    """Split on commas not escaped with a backslash."""
    parts, cur, esc = [], [], False
    for ch in text:
        if esc:
            cur.append(ch)
            esc = False
        elif ch == "\\":
            esc = True
        elif ch == ",":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p for p in (s.strip() for s in parts) if p]


def _join_tcti(items: list[str]) -> list[str]:
    """A TCTI has commas of its own (`swtpm:host=127.0.0.1,port=2321`): glue the pieces that follow
    `tpm_tcti=` back on while they are not options we know."""
    out: list[str] = []
    for item in items:
        key = item.partition("=")[0]
        known = key in VALUE_KEYS or key in ID_KEYS or item in KERNEL_FLAGS or item in FLAGS or item in IGNORED \
            or item.startswith(IGNORED_PREFIXES)
        if out and out[-1].startswith("tpm_tcti=") and not known:
            out[-1] += "," + item
        else:
            out.append(item)
    return out


def parse(option_strings: list[str]) -> MountOptions:
    opts = MountOptions()
    for text in option_strings:
        for item in _join_tcti(_split(text)):
            key, eq, value = item.partition("=")
            if key in VALUE_KEYS:
                if not eq or not value:
                    raise UserError(f"mount option {key} needs a value: -o {key}=PATH")
                setattr(opts, key, value)
            elif key in ID_KEYS:
                setattr(opts, key, _id(key, value))
            elif item in ("ro", "rw"):
                opts.readonly = item == "ro"
            elif item == "debug":
                opts.debug = True
            elif item == "accept_rollback":
                opts.accept_rollback = True
            elif item == "notpm":
                opts.use_tpm = False
            elif item == "noindex":
                opts.index = False
            elif item in KERNEL_FLAGS:
                if item not in opts.fuse:
                    opts.fuse.append(item)
            elif item in IGNORED or item.startswith(IGNORED_PREFIXES):
                continue
            else:
                raise UserError(f"unknown mount option {item!r} (see `clawfs mount --help`)")
    if opts.readonly:
        opts.fuse = [o for o in opts.fuse if o != "rw"] + ["ro"]
    if opts.agent_gid is not None and opts.agent_uid is None:
        raise UserError("mount option agent_gid needs agent_uid too: -o agent_uid=N,agent_gid=G")
    if opts.agent_uid is not None and "allow_other" not in opts.fuse:
        opts.fuse.append("allow_other")  # the agent's uid is not the owner's: without it the kernel refuses it
    return opts


def _id(key: str, value: str) -> int:
    if not value.isdigit() or int(value) == 0 or int(value) > 0xFFFFFFFE:
        raise UserError(f"mount option {key} needs a numeric id other than 0: -o {key}=64010")
    return int(value)
