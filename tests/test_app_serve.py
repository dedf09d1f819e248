"""``advlens serve``: it binds the loopback interface only, serves the app and the store's images, and reports
bad arguments and a taken port. Runs on a store of the built-in demo model on generated images (no dataset
needed; the server rebuilds the model from the store alone)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from app_fixtures import demo_model_store_path

from advlens.cli import main


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return demo_model_store_path(tmp_path_factory)


def listening_addresses(port: int) -> list[str]:
    """The local addresses that listen on TCP ``port``, read from the kernel's socket tables (/proc/net/tcp and
    tcp6, always present on Linux: no `ss` or `netstat` needed)."""
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            if width == 8:  # IPv4, little-endian
                found.append(socket.inet_ntop(socket.AF_INET, raw[::-1]))
            else:  # IPv6: four little-endian 32-bit words
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                found.append(socket.inet_ntop(socket.AF_INET6, words))
    return found


def non_loopback_address() -> str | None:
    """An address of this machine outside 127.0.0.0/8 (the interface of the default route), if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # UDP: no packet is sent, the kernel only picks a route
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_the_listening_check_sees_a_socket_open_to_the_network():
    """The check below can fail: a socket bound to every interface is reported as such."""
    with socket.socket() as wide:
        wide.bind(("0.0.0.0", 0))
        wide.listen()
        port = wide.getsockname()[1]
        assert listening_addresses(port) == ["0.0.0.0"]
    with socket.socket() as narrow:
        narrow.bind(("127.0.0.1", 0))
        narrow.listen()
        assert listening_addresses(narrow.getsockname()[1]) == ["127.0.0.1"]


def test_serve_parser_defaults_and_errors(tmp_path, capsys):
    from advlens.cli import build_parser

    args = build_parser().parse_args(["serve", "some/store"])
    assert (args.host, args.port, args.store) == ("127.0.0.1", 8050, "some/store")
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "no analysis store" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--port", "0"]) == 2


def test_serve_reports_a_taken_port(store, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(store), "--port", str(port), "--device", "cpu"]) == 2
    assert f"cannot serve on 127.0.0.1:{port}" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_advlens_serve_binds_localhost_and_serves_the_app(store):
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "advlens.cli", "serve", str(store), "--port", str(port),
                                "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/neurons", timeout=2).read().decode()
                break
            except (urllib.error.URLError, ConnectionError):
                assert process.poll() is None, process.stdout.read()
                assert time.monotonic() < deadline, "advlens serve did not come up"
                time.sleep(0.3)
        assert "advlens" in page
        image = urllib.request.urlopen(f"http://127.0.0.1:{port}/pair-image/0/benign.png", timeout=5)
        assert image.headers["Content-Type"] == "image/png"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/pair-image/99999/benign.png", timeout=5)
        assert missing.value.code == 404
        # only the loopback address listens: the kernel's table says so, and the machine's other address refuses
        assert listening_addresses(port) == ["127.0.0.1"]
        outside = non_loopback_address()
        if outside is not None:
            with pytest.raises(OSError):
                socket.create_connection((outside, port), timeout=2).close()
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    assert f"http://127.0.0.1:{port}/" in output
