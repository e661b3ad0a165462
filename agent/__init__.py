"""Agent services that live ON the filesystem (home layout, agent loop, channels, safety).

Reserved: built by the agent issues; it reaches ClawFS only through the mount, never by importing `clawfs`.
"""
