"""ClawFS's benchmarks (fs_throughput, search, migrate, tpm_unseal), each run as a module from the repository root:

    .venv/bin/python -m bench.fs_throughput --out bench/results

Why modules rather than scripts that put tests/ on sys.path: a benchmark needs some of the fixture builders
the tests use (a throwaway PostgreSQL server with IronClaw's schema, a swtpm simulator), and those must stay one
copy.  Run from the repository root, `tests` is importable as an implicit namespace package (`from tests import
ironclaw_db`), so no script edits sys.path and pytest's own view of tests/ (rootdir-based module names, sibling
imports through `pythonpath = ["tests"]`) is left untouched: tests/ gets no __init__.py.  The price is that a
fixture module a benchmark imports may import only installed packages and the product, not its tests/ siblings
by bare name (tests/ironclaw_db.py and tests/swtpm.py import neither).  Moving the builders into a package of
their own would serve too, but would split the tests' helpers across two trees for two benchmarks' sake.

Machine facts come from kernel/sysinfo.py (bench/machine.py adds the code's identity); the HNSW tuner and the
debian-docs corpus are the library clawfs.index.tuning.  Never imported by the product.
"""
