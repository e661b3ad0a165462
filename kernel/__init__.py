"""Thin wrappers of Linux and TPM interfaces (mount table, process hardening, later namespaces, seccomp,
Landlock, cgroups, netns and TPM sealing). Imports nothing from the rest of ClawFS."""
