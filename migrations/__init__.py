"""Importers into a store (IronClaw PostgreSQL).  Reserved for the `clawfs migrate` issue."""
