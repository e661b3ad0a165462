"""Composition root: the `clawfs` command line, mount options, the mount daemon and the demo.

Nothing imports this package.  Later it also unlocks, mounts and launches the jailed agent runtime.
"""
