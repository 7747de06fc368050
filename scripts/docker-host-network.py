#!/usr/bin/env python3
"""Host networking for `sam local invoke`: a Docker API socket in front of the real one.

SAM CLI (checked: 1.170) accepts `--docker-network host` but never puts its container in the host's
network: it only skips attaching a network, so the function runs on Docker's bridge, where
127.0.0.1 is the container itself and the local stack on the host's loopback is out of reach.
This proxy passes every Docker API call through unchanged except SAM's container creation (the
container whose entrypoint is SAM's Runtime Interface Emulator), which it changes to:
  - `NetworkMode: host`, so the function reaches the local stack on 127.0.0.1, and no traffic at
    all goes to bridge addresses;
  - the emulator listening on 127.0.0.1 at the port SAM published for it (SAM connects there), and
    its Runtime API on a free loopback port (not 9001, which another run may hold);
  - no published ports (host networking has none).

Usage: scripts/docker-host-network.py SOCKET [DOCKER_SOCKET]
  then DOCKER_HOST=unix://SOCKET sam local invoke ...   (runs until killed)
DOCKER_SOCKET defaults to /var/run/docker.sock. Standard library only.

It needs a rootful engine on this machine, and exits at once, saying why, if the engine does not
answer or runs rootless: rootless Docker's host network is a network namespace of RootlessKit's,
whose 127.0.0.1 is not this machine's, so the function could not reach the local stack.
"""

import asyncio
import json
import os
import re
import socket
import sys

RIE = "/var/rapid/aws-lambda-rie"
INFO_TIMEOUT = 10
CREATE = re.compile(rb"^POST /(v[\d.]+/)?containers/create[ ?]")


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def host_network(body: bytes) -> bytes:
    """The create request of SAM's emulator container, changed to host networking."""
    spec = json.loads(body)
    entrypoint = spec.get("Entrypoint") or []
    if not entrypoint or entrypoint[0] != RIE:
        return body
    host_config = spec.setdefault("HostConfig", {})
    bindings = host_config.pop("PortBindings", None) or {}
    published = [b.get("HostPort") for b in bindings.get("8080/tcp", []) if b.get("HostPort")]
    if not published:
        raise ValueError("SAM published no port for its emulator (8080/tcp)")
    spec.pop("ExposedPorts", None)
    host_config["NetworkMode"] = "host"
    spec["Entrypoint"] = entrypoint + [
        "--runtime-interface-emulator-address",
        f"127.0.0.1:{published[0]}",
        "--runtime-api-address",
        f"127.0.0.1:{free_loopback_port()}",
    ]
    print(f"docker-host-network: SAM's container on the host network, emulator on 127.0.0.1:{published[0]}", flush=True)
    return json.dumps(spec).encode()


def unsupported(info: dict):
    """Why host networking through the engine described by `info` (GET /info) cannot reach this
    machine's loopback, or None."""
    if any("name=rootless" in option for option in info.get("SecurityOptions") or []):
        return (
            "the Docker engine runs rootless: its host network is RootlessKit's namespace, where "
            "127.0.0.1 is not this machine's, so the function could not reach the local stack; "
            "use a rootful Docker Engine"
        )
    return None


async def engine_info(docker_socket: str) -> dict:
    """The engine's GET /info (HTTP/1.0 and `Connection: close`: the body is all that follows the
    head, up to the end of the connection)."""
    reader, writer = await asyncio.open_unix_connection(docker_socket)
    try:
        writer.write(b"GET /info HTTP/1.0\r\nHost: docker\r\nConnection: close\r\n\r\n")
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
    status, _, rest = response.partition(b"\r\n")
    if b" 200 " not in status + b" ":
        raise ValueError(f"GET /info answered {status.decode(errors='replace')!r}")
    return json.loads(rest.partition(b"\r\n\r\n")[2])


async def read_request(reader: asyncio.StreamReader):
    """One HTTP/1.1 request: (head, body), or None at the end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    headers = {
        k.strip().lower(): v.strip()
        for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:] if line)
    }
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
        head = re.sub(rb"(?im)^transfer-encoding:.*\r\n", b"", head)
        head = head[:-2] + b"Content-Length: %d\r\n\r\n" % len(body)
    else:
        body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return head, body, headers


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.write_eof()
        except (OSError, RuntimeError):
            pass


async def serve(client_reader, client_writer, docker_socket):
    docker_reader, docker_writer = await asyncio.open_unix_connection(docker_socket)
    responses = asyncio.ensure_future(pipe(docker_reader, client_writer))
    try:
        while request := await read_request(client_reader):
            head, body, headers = request
            if CREATE.match(head):
                changed = host_network(body)
                if changed is not body:
                    head = re.sub(rb"(?im)^content-length:.*\r\n", b"Content-Length: %d\r\n" % len(changed), head)
                    body = changed
            docker_writer.write(head + body)
            await docker_writer.drain()
            if b"upgrade" in headers.get(b"connection", b"").lower():
                await pipe(client_reader, docker_writer)  # a hijacked stream (attach): bytes only
                break
        else:
            docker_writer.write_eof()
        await responses
    except (ConnectionError, asyncio.IncompleteReadError, ValueError) as error:
        print(f"docker-host-network: {error}", file=sys.stderr, flush=True)
    finally:
        responses.cancel()
        client_writer.close()
        docker_writer.close()


async def main(path: str, docker_socket: str):
    try:
        reason = unsupported(await asyncio.wait_for(engine_info(docker_socket), INFO_TIMEOUT))
    except asyncio.TimeoutError:
        reason = f"no Docker engine answers at {docker_socket} (GET /info, {INFO_TIMEOUT} s)"
    except (OSError, ValueError) as error:
        reason = f"no Docker engine answers at {docker_socket}: {error}"
    if reason:
        sys.exit(f"docker-host-network: {reason}")
    if os.path.exists(path):
        os.unlink(path)
    server = await asyncio.start_unix_server(lambda r, w: serve(r, w, docker_socket), path)
    print(f"docker-host-network: listening on {path}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: docker-host-network.py SOCKET [DOCKER_SOCKET]")
    asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else "/var/run/docker.sock"))
