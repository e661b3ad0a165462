"""The one typed error of a tool call: traps, fuel, timeouts, memory, malformed output, refused tools."""

from __future__ import annotations

# kind -> what it means; `clawfs tool run --json` reports the kind as `error.kind`.
KINDS = {
    "fuel": "the tool used up its CPU budget (fuel)",
    "timeout": "the tool ran past its wall-time limit (epoch deadline)",
    "memory": "the tool needed more memory than its limit",
    "trap": "the tool trapped (a panic, unreachable, a bad memory access)",
    "malformed": "the tool returned a value its interface does not allow",
    "invalid": "the binary is not a near:agent tool component this host can run",
    "capabilities": "the tool's capabilities.json cannot be used",
    "not-found": "no such tool",
    "tool": "the tool reported an error of its own",
    "blocked": "the output was withheld by the leak detector",
    "worker": "the tool's jailed worker could not start or died during the call (mountd/toolbroker.py)",
}


class ToolError(Exception):
    """A tool call that did not produce a usable output.  Never a crash of the host."""

    def __init__(self, kind: str, reason: str, **detail: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason
        self.detail = {k: v for k, v in detail.items() if v}  # e.g. a 0.4.1 guest failure's kind and code
        self.logs: list[tuple[str, str]] = []  # the tool's log lines up to the failure (leak-checked)

    def __str__(self) -> str:
        return f"{self.kind}: {self.reason}"

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "reason": self.reason, **self.detail}
