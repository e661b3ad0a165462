"""The WASM tool host (toolhost.py over wasm.py, the only wasmtime import), the egress policy (egress.py), IronClaw's
capabilities files (capabilities.py), the leak detector (leaks.py) and the process jail (built from `kernel`
primitives).  Store-free: nothing here imports clawfs, agent, migrations or mountd."""
