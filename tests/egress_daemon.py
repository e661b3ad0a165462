"""`python tests/egress_daemon.py CONFIG.json clawfs-args...`: the real `clawfs` command (mount, in the tests), whose
mount daemon's egress proxy may reach this machine's loopback test servers: the test's names (`*.test`) resolve to
127.0.0.1 by a stub, 127.0.0.0/8 is allowed explicitly, and the test's throwaway CA is trusted for the upstream.

The daemon forks from this process without an exec (mountd/daemon.py), so the patch made here is the daemon's.
Nothing else changes: the policy, credential injection from secrets/ and redaction are the daemon's own.
CONFIG: {"hosts": {name: address}, "ca_pem": PEM of the upstream's CA}."""

from __future__ import annotations

import ipaddress
import json
import ssl
import sys
from typing import Any

from mountd import cli, proxy_service
from sandbox.egress import EgressConfig, SystemResolver


class TestResolver:
    def __init__(self, hosts: dict[str, str]) -> None:
        self.hosts = hosts
        self.system = SystemResolver()

    def resolve(self, host: str, port: int) -> list[str]:
        if host in self.hosts:
            return [self.hosts[host]]
        return self.system.resolve(host, port)


def main() -> None:
    with open(sys.argv[1]) as f:
        config = json.load(f)
    verify = ssl.create_default_context(cadata=config["ca_pem"])
    resolver = TestResolver(config["hosts"])

    def egress_config(**kw: Any) -> EgressConfig:
        return EgressConfig(**{"resolver": resolver, "verify": verify,
                               "allow_networks": (ipaddress.ip_network("127.0.0.0/8"),), **kw})

    vars(proxy_service)["EgressConfig"] = egress_config  # ProxyService builds its Egress with it
    sys.argv = ["clawfs", *sys.argv[2:]]
    cli.main()


if __name__ == "__main__":
    main()
