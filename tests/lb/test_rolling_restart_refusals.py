"""contrib/haproxy/rolling_restart.py refuses to take out a host when that would leave none."""

from __future__ import annotations

from tests.lb.processes import free_port, rolling_restart_module, wait_for


def test_refuses_without_another_host_up(haproxy, capsys) -> None:  # type: ignore[no-untyped-def]
    # Nothing listens at either address: both servers go DOWN.
    proxy = haproxy([f"127.0.0.2:{free_port('127.0.0.2')}", f"127.0.0.3:{free_port('127.0.0.3')}"])
    tool = rolling_restart_module()
    wait_for("both servers DOWN", lambda: {row["status"] for row in tool.server_stats(
        proxy.socket_path).values()} == {"DOWN"}, timeout=60)

    assert tool.main(["--socket", proxy.socket_path, "--restart", "false", "api1"]) == 1
    assert "no server but api1 is UP in swiftmail_api" in capsys.readouterr().err
    assert tool.main(["--socket", proxy.socket_path, "--restart", "false", "api9"]) == 1
    assert "HAProxy has no server swiftmail_api/api9" in capsys.readouterr().err
    # Nothing was put in maintenance (srv_admin_state, the 7th field, is 0).
    states = tool.runtime_command(proxy.socket_path, "show servers state swiftmail_api")
    assert all(line.split()[6] == "0" for line in states.splitlines()[2:] if line.strip())
