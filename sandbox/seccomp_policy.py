"""The jail's seccomp policy, as data: the syscalls allowed (Docker's default profile, trimmed), the argument
checks on clone, socket and ioctl, and the refused list with the reason for each. The default answer to
anything not listed is EPERM. tests/test_jail_escape.py tries each refused call from inside the jail."""

from __future__ import annotations

import errno
import socket

from kernel.namespaces import ALL_NAMESPACES
from kernel.seccomp import Allow, ArgCheck, Refuse

# Plain allow: what python3, a shell and coreutils/curl use. No mount, namespace, module, tracing, keyring,
# BPF, perf, io_uring or userfaultfd call appears here.
PLAIN = """
accept accept4 access alarm arch_prctl bind brk capget chdir chmod chown clock_getres clock_gettime
clock_nanosleep close close_range connect copy_file_range creat dup dup2 dup3 epoll_create epoll_create1
epoll_ctl epoll_pwait epoll_pwait2 epoll_wait eventfd eventfd2 execve execveat exit exit_group faccessat
faccessat2 fadvise64 fallocate fchdir fchmod fchmodat fchmodat2 fchown fchownat fcntl fdatasync fgetxattr
flistxattr flock fork fremovexattr fsetxattr fstat fstatfs fsync ftruncate futex futex_waitv futimesat
get_robust_list get_thread_area getcpu getcwd getdents getdents64 getegid geteuid getgid getgroups getitimer
getpeername getpgid getpgrp getpid getppid getpriority getrandom getresgid getresuid getrlimit getrusage
getsid getsockname getsockopt gettid gettimeofday getuid getxattr inotify_add_watch inotify_init
inotify_init1 inotify_rm_watch ioctl kill lchown lgetxattr link linkat listen listxattr llistxattr lremovexattr
lseek lsetxattr lstat madvise membarrier memfd_create mincore mkdir mkdirat mknodat mlock mlock2 mlockall
mmap mprotect mremap msync munlock munlockall munmap nanosleep newfstatat open openat openat2 pause pipe
pipe2 poll ppoll prctl pread64 preadv preadv2 prlimit64 pselect6 pwrite64 pwritev pwritev2 read readahead
readlink readlinkat readv recvfrom recvmmsg recvmsg removexattr rename renameat renameat2 restart_syscall
rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend
rt_sigtimedwait rt_tgsigqueueinfo sched_get_priority_max sched_get_priority_min sched_getaffinity
sched_getattr sched_getparam sched_getscheduler sched_setaffinity sched_yield select semctl semget semop
semtimedop send sendfile sendmmsg sendmsg sendto set_robust_list set_thread_area set_tid_address setitimer
setpgid setpriority setsid setsockopt shutdown sigaltstack signalfd signalfd4 socketpair splice stat statfs
statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time timer_create timer_delete
timer_getoverrun timer_gettime timer_settime timerfd_create timerfd_gettime timerfd_settime times tkill
truncate umask uname unlink unlinkat utime utimensat utimes vfork wait4 waitid write writev
landlock_create_ruleset landlock_add_rule landlock_restrict_self pidfd_open pidfd_send_signal
""".split()  # noqa: SIM905 (a block of names reads better as data than 300 quoted strings)

_NS = ALL_NAMESPACES
_TYPE_MASK = 0xF  # socket type without SOCK_NONBLOCK/SOCK_CLOEXEC

CONDITIONAL = [
    # clone: threads and forks yes, any namespace flag no.
    Allow("clone", ((ArgCheck(0, _NS, 0),),)),
    # socket: Unix, and TCP/UDP over IPv4/IPv6 only (no raw, no packet); netlink route for getaddrinfo.
    Allow("socket", (
        (ArgCheck(0, 0xFFFFFFFF, socket.AF_UNIX),),
        (ArgCheck(0, 0xFFFFFFFF, socket.AF_INET), ArgCheck(1, _TYPE_MASK, socket.SOCK_STREAM)),
        (ArgCheck(0, 0xFFFFFFFF, socket.AF_INET), ArgCheck(1, _TYPE_MASK, socket.SOCK_DGRAM)),
        (ArgCheck(0, 0xFFFFFFFF, socket.AF_INET6), ArgCheck(1, _TYPE_MASK, socket.SOCK_STREAM)),
        (ArgCheck(0, 0xFFFFFFFF, socket.AF_INET6), ArgCheck(1, _TYPE_MASK, socket.SOCK_DGRAM)),
        (ArgCheck(0, 0xFFFFFFFF, socket.AF_NETLINK), ArgCheck(2, 0xFFFFFFFF, 0)),
    )),
]

# The refused list (EPERM unless stated): each one is a way out of, or around, the jail.
REFUSED = [
    Refuse("mount", errno.EPERM, "remount the read-only root writable, cover /agent"),
    Refuse("umount2", errno.EPERM, "uncover what a mount hides"),
    Refuse("pivot_root", errno.EPERM, "change root again"),
    Refuse("chroot", errno.EPERM, "change root again"),
    Refuse("move_mount", errno.EPERM, "new mount API"),
    Refuse("open_tree", errno.EPERM, "new mount API"),
    Refuse("fsopen", errno.EPERM, "new mount API"),
    Refuse("fsmount", errno.EPERM, "new mount API"),
    Refuse("fsconfig", errno.EPERM, "new mount API"),
    Refuse("fspick", errno.EPERM, "new mount API"),
    Refuse("mount_setattr", errno.EPERM, "clear read-only"),
    Refuse("ptrace", errno.EPERM, "read or steer another process"),
    Refuse("process_vm_readv", errno.EPERM, "read another process's memory"),
    Refuse("process_vm_writev", errno.EPERM, "write another process's memory"),
    Refuse("bpf", errno.EPERM, "kernel programs"),
    Refuse("perf_event_open", errno.EPERM, "side channels, kernel attack surface"),
    Refuse("kexec_load", errno.EPERM, "replace the kernel"),
    Refuse("kexec_file_load", errno.EPERM, "replace the kernel"),
    Refuse("keyctl", errno.EPERM, "kernel keyrings are not namespaced"),
    Refuse("add_key", errno.EPERM, "kernel keyrings are not namespaced"),
    Refuse("request_key", errno.EPERM, "kernel keyrings are not namespaced"),
    Refuse("unshare", errno.EPERM, "new namespaces (a fresh user namespace regains capabilities)"),
    Refuse("setns", errno.EPERM, "enter another namespace"),
    Refuse("clone3", errno.ENOSYS, "its flags are behind a pointer a filter cannot read; ENOSYS makes libc use clone"),
    Refuse("init_module", errno.EPERM, "load kernel code"),
    Refuse("finit_module", errno.EPERM, "load kernel code"),
    Refuse("delete_module", errno.EPERM, "unload kernel code"),
    Refuse("open_by_handle_at", errno.EPERM, "open files by handle past the mount's root (the shocker escape)"),
    Refuse("name_to_handle_at", errno.EPERM, "pairs with open_by_handle_at"),
    Refuse("io_uring_setup", errno.EPERM, "io_uring bypasses seccomp for the calls it carries"),
    Refuse("io_uring_enter", errno.EPERM, "io_uring"),
    Refuse("io_uring_register", errno.EPERM, "io_uring"),
    Refuse("userfaultfd", errno.EPERM, "stalls kernel threads, a classic exploit aid"),
    Refuse("personality", errno.EPERM, "legacy execution domains"),
    Refuse("acct", errno.EPERM, "host accounting"),
    Refuse("swapon", errno.EPERM, "host swap"),
    Refuse("swapoff", errno.EPERM, "host swap"),
    Refuse("reboot", errno.EPERM, "host power"),
    Refuse("sethostname", errno.EPERM, "name set by the jail"),
    Refuse("setdomainname", errno.EPERM, "name set by the jail"),
    Refuse("settimeofday", errno.EPERM, "host clock"),
    Refuse("clock_settime", errno.EPERM, "host clock"),
    Refuse("clock_adjtime", errno.EPERM, "host clock"),
    Refuse("adjtimex", errno.EPERM, "host clock"),
    Refuse("syslog", errno.EPERM, "kernel log"),
    Refuse("quotactl", errno.EPERM, "host quotas"),
    Refuse("lookup_dcookie", errno.EPERM, "kernel internals"),
    Refuse("vhangup", errno.EPERM, "terminals"),
    Refuse("fanotify_init", errno.EPERM, "watch the whole filesystem"),
    Refuse("mbind", errno.EPERM, "NUMA policy"),
    Refuse("set_mempolicy", errno.EPERM, "NUMA policy"),
    Refuse("migrate_pages", errno.EPERM, "NUMA policy"),
    Refuse("move_pages", errno.EPERM, "NUMA policy"),
    Refuse("iopl", errno.EPERM, "port I/O"),
    Refuse("ioperm", errno.EPERM, "port I/O"),
    Refuse("setuid", errno.EPERM, "identity is fixed"),
    Refuse("setgid", errno.EPERM, "identity is fixed"),
    Refuse("setreuid", errno.EPERM, "identity is fixed"),
    Refuse("setregid", errno.EPERM, "identity is fixed"),
    Refuse("setresuid", errno.EPERM, "identity is fixed"),
    Refuse("setresgid", errno.EPERM, "identity is fixed"),
    Refuse("setgroups", errno.EPERM, "identity is fixed"),
    Refuse("setfsuid", errno.EPERM, "identity is fixed"),
    Refuse("setfsgid", errno.EPERM, "identity is fixed"),
    Refuse("capset", errno.EPERM, "capabilities are gone"),
    Refuse("uselib", errno.EPERM, "legacy"),
    Refuse("pidfd_getfd", errno.EPERM, "steal another process's file descriptors"),
]


def allowed() -> list[Allow]:
    """The allowlist. ioctl is allowed whole: the jail has no terminal of the host's (stdin is a pipe or
    /dev/null unless the owner runs it interactively), and TIOCSTI needs CAP_SYS_ADMIN on this kernel."""
    return [Allow(name) for name in PLAIN] + CONDITIONAL


def refused() -> list[Refuse]:
    return REFUSED
