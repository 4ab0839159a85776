"""Probe TCP ports from this host: which of the given listeners accept a connection.

Input (argv[1], a JSON file): {"<address>": "<`ss -ltnH` output of that host>", ...}. Every
listener not bound to loopback is probed at the host's address (1.5 s connect timeout, in
parallel). Output (stdout, JSON): {"<address>": {"<port>": "open" | "closed"}}.
"""

from __future__ import annotations

import json
import socket
import sys
from concurrent.futures import ThreadPoolExecutor


def listening_ports(ss_output: str) -> list[int]:
    """Ports of the listeners reachable from another host (not bound to loopback only)."""
    ports = set()
    for line in ss_output.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        local = fields[3]
        address, _, port = local.rpartition(":")
        address = address.strip("[]").split("%")[0]
        if address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1"):
            continue
        if port.isdigit():
            ports.add(int(port))
    return sorted(ports)


def is_open(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.5)
        return sock.connect_ex((address, port)) == 0


def main() -> None:
    with open(sys.argv[1]) as handle:
        targets = {address: listening_ports(ss) for address, ss in json.load(handle).items()}
    probes = [(address, port) for address, ports in targets.items() for port in ports]
    with ThreadPoolExecutor(max_workers=64) as pool:
        results = list(pool.map(lambda probe: is_open(*probe), probes))
    report: dict[str, dict[str, str]] = {address: {} for address in targets}
    for (address, port), opened in zip(probes, results, strict=True):
        report[address][str(port)] = "open" if opened else "closed"
    json.dump(report, sys.stdout, sort_keys=True)


if __name__ == "__main__":
    main()
