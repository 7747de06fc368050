"""scripts/docker-host-network.py: what it changes in SAM's container creation, and what it leaves.

Run: .venv/bin/python tests/scripts/test_docker_host_network.py -v (scripts/test.sh does).
The end-to-end proof is scripts/sam-local.sh; this pins the rewrite itself.
"""

import importlib.util
import json
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "docker-host-network.py"
spec = importlib.util.spec_from_file_location("docker_host_network", SCRIPT)
proxy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(proxy)


def sam_create(**overrides) -> dict:
    """A container-create body as SAM CLI 1.170 sends it for the function."""
    body = {
        "Image": "samcli/lambda-provided:al2023-rapid-x86_64",
        "Entrypoint": ["/var/rapid/aws-lambda-rie", "--log-level", "error"],
        "Env": ["DB_HOST=localhost"],
        "ExposedPorts": {"8080/tcp": {}},
        "HostConfig": {"PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "5123"}]}},
    }
    body.update(overrides)
    return body


class Rewrite(unittest.TestCase):
    def test_sams_container_gets_the_host_network_and_a_loopback_emulator(self):
        spec = json.loads(proxy.host_network(json.dumps(sam_create()).encode()))
        self.assertEqual(spec["HostConfig"]["NetworkMode"], "host")
        self.assertNotIn("PortBindings", spec["HostConfig"])
        self.assertNotIn("ExposedPorts", spec)
        entrypoint = spec["Entrypoint"]
        self.assertEqual(entrypoint[:3], ["/var/rapid/aws-lambda-rie", "--log-level", "error"])
        self.assertEqual(entrypoint[3:5], ["--runtime-interface-emulator-address", "127.0.0.1:5123"])
        self.assertEqual(entrypoint[5], "--runtime-api-address")
        host, port = entrypoint[6].split(":")
        self.assertEqual(host, "127.0.0.1")
        self.assertTrue(1024 <= int(port) <= 65535)
        self.assertEqual(spec["Env"], ["DB_HOST=localhost"])

    def test_other_containers_pass_through_byte_for_byte(self):
        for body in (sam_create(Entrypoint=["/bin/sh"]), sam_create(Entrypoint=None), {"Image": "x"}):
            raw = json.dumps(body).encode()
            self.assertIs(proxy.host_network(raw), raw)

    def test_an_emulator_without_a_published_port_is_an_error_not_a_silent_pass(self):
        body = sam_create(HostConfig={})
        with self.assertRaisesRegex(ValueError, "published no port"):
            proxy.host_network(json.dumps(body).encode())

    def test_only_container_creation_is_looked_at(self):
        self.assertTrue(proxy.CREATE.match(b"POST /v1.41/containers/create?name=x HTTP/1.1"))
        self.assertTrue(proxy.CREATE.match(b"POST /containers/create HTTP/1.1"))
        self.assertFalse(proxy.CREATE.match(b"POST /v1.41/containers/abc/start HTTP/1.1"))
        self.assertFalse(proxy.CREATE.match(b"GET /v1.41/containers/create HTTP/1.1"))


ROOTFUL = {"SecurityOptions": ["name=apparmor", "name=seccomp,profile=builtin", "name=cgroupns"]}
ROOTLESS = {"SecurityOptions": ["name=seccomp,profile=builtin", "name=rootless", "name=cgroupns"]}


class FakeEngine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """A Docker engine on a unix socket that answers every request with `info`, or (None) reads
    the request and never answers."""

    daemon_threads = True

    def __init__(self, path: str, info):
        body = json.dumps(info).encode()
        answer = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + body
        silent = threading.Event()

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                while self.rfile.readline() not in (b"\r\n", b""):
                    pass
                if info is None:
                    silent.wait(60)
                else:
                    self.wfile.write(answer)

        super().__init__(path, Handler)
        self.stop_silence = silent.set
        threading.Thread(target=self.serve_forever, daemon=True).start()


class Engine(unittest.TestCase):
    """The proxy starts only in front of an engine whose host network is this machine's."""

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)
        self.engine = f"{self.dir.name}/engine.sock"
        self.proxy = f"{self.dir.name}/proxy.sock"

    def start_proxy(self) -> subprocess.Popen:
        proxy = subprocess.Popen(
            [sys.executable, str(SCRIPT), self.proxy, self.engine],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.addCleanup(proxy.communicate)
        self.addCleanup(proxy.kill)
        return proxy

    def assert_refused(self, reason: str):
        proxy = self.start_proxy()
        _, stderr = proxy.communicate(timeout=30)
        self.assertEqual(proxy.returncode, 1, stderr)
        self.assertIn(reason, stderr)
        self.assertFalse(Path(self.proxy).exists(), "it never listened")

    def test_the_engines_security_options_tell_rootless_from_rootful(self):
        self.assertIsNone(proxy.unsupported(ROOTFUL))
        self.assertIsNone(proxy.unsupported({}))
        self.assertIn("rootless", proxy.unsupported(ROOTLESS))

    def test_a_rootless_engine_is_refused_at_start(self):
        engine = FakeEngine(self.engine, ROOTLESS)
        self.addCleanup(engine.server_close)
        self.addCleanup(engine.shutdown)
        self.assert_refused("the Docker engine runs rootless")

    def test_no_engine_is_refused_at_start(self):
        self.assert_refused(f"no Docker engine answers at {self.engine}")

    def test_an_engine_that_never_answers_is_refused_after_the_timeout(self):
        engine = FakeEngine(self.engine, None)
        self.addCleanup(engine.server_close)
        self.addCleanup(engine.shutdown)
        self.addCleanup(engine.stop_silence)
        self.assert_refused(f"no Docker engine answers at {self.engine} (GET /info, 10 s)")

    def test_a_rootful_engine_gets_the_proxy(self):
        engine = FakeEngine(self.engine, ROOTFUL)
        self.addCleanup(engine.server_close)
        self.addCleanup(engine.shutdown)
        proxy = self.start_proxy()
        deadline = time.monotonic() + 30
        while not Path(self.proxy).exists() and proxy.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertIsNone(proxy.poll(), "it runs")
        self.assertTrue(Path(self.proxy).exists(), "it listens")


if __name__ == "__main__":
    unittest.main()
