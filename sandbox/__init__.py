"""The wasmtime tool host and the process jail (built from `kernel` primitives).  Reserved for its issue."""
