"""A router/port another program holds is said at once, in one line naming the port and the
holder, by `fence serve` at start and by `kato status` (issue 13 item 10)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from tests.integration.node_kit import Node, free_port


def test_a_taken_router_port_is_named_with_its_holder_at_start_and_in_status(tmp_path: Path) -> None:
    port = free_port()
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", port))
    holder.listen()
    node = Node(root=tmp_path / "home", router_port=port)
    expected = (f"router/port {port} on 127.0.0.1 is taken by pid {os.getpid()} (", "not this node's router")
    try:
        node.start()
        status = node.cli("kato", "status")
        assert status.exit_code == 0, status.stderr
        [line] = [w for w in status.stderr.splitlines() if f"router/port {port}" in w]
        assert line.startswith(f"warning: {expected[0]}") and expected[1] in line, line
        assert "kato config set fence router/port N" in line
        as_json = json.loads(node.cli("kato", "status", "--json").stdout)
        assert any(w.startswith(expected[0]) for w in as_json["warnings"])
        node.stop_daemon()
        first = [json.loads(raw) for raw in (node.root / "daemon.log").read_text().splitlines()[:5] if raw.startswith("{")]
        said = [r for r in first if r["message"].startswith(expected[0])]
        assert said and said[0]["level"] == "warning", first
    finally:
        node.close()
        holder.close()
