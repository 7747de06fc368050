"""A local stand-in for IAM database authentication (RDS Proxy with IAM auth, Aurora DSQL).

It listens for PostgreSQL clients, insists on TLS, asks for a cleartext password (as RDS and DSQL
do for IAM logins), and checks that password as an IAM auth token: its own SigV4 computation
(not botocore's, not aws-sigv4's) with the static credentials given here, the expected host,
action and user, and its age. A valid token lets the connection through to the real database
(PgBouncer, over TLS, with the role's SCRAM password); anything else gets SQLSTATE 28P01, as a
refused IAM login does. Each decision is appended to the log as one line ("accepted ..." or
"rejected: <reason>"), for the tests.

Usage: iam_verifier.py CONFIG PORT. It listens on 127.0.0.1:PORT with the settings in CONFIG, a
JSON object written by local-stack/src/iam.rs (the backend password is in there, never on a
command line), and writes the file "ready" beside CONFIG once it does. An unexpected error in a
connection is logged too ("error: ..."), so that a test sees it. local-stack starts and stops it
like its other servers. Standard library only.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import hmac
import json
import os
import ssl
import struct
import sys
import types
import urllib.parse

SSL_REQUEST = 80877103
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def error_response(code: str, message: str) -> bytes:
    fields = b"".join(kind + value.encode() + b"\0" for kind, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", code), (b"M", message)))
    body = fields + b"\0"
    return b"E" + struct.pack("!I", len(body) + 4) + body


def message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


async def read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    header = await reader.readexactly(5)
    (length,) = struct.unpack("!I", header[1:])
    return header[:1], await reader.readexactly(length - 4)


def encode(text: str) -> str:
    return urllib.parse.quote(text, safe="-_.~")


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


class Verifier:
    def __init__(self, args: types.SimpleNamespace):
        self.args = args
        self.to_tamper = args.tamper_first
        self.server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server_tls.load_cert_chain(args.cert, args.key)
        self.backend_tls = ssl.create_default_context(cafile=args.backend_ca)

    def log(self, line: str) -> None:
        with open(self.args.log, "a", encoding="utf-8") as log:
            log.write(line + "\n")

    def check(self, token: str, user: str) -> str | None:
        """Why `token` is not a valid IAM token for `user`, or None."""
        authority, sep, query = token.partition("/?")
        if not sep or authority != self.args.authority:
            return f"wrong host {authority!r}"
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=False)
        params = dict(pairs)
        if self.args.service == "rds-db":
            if params.get("Action") != "connect" or params.get("DBUser") != user:
                return "wrong action or user"
        else:
            wanted = "DbConnectAdmin" if user == "admin" else "DbConnect"
            if params.get("Action") != wanted:
                return f"wrong action (wanted {wanted})"
        try:
            stamp = datetime.datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
            expires = int(params["X-Amz-Expires"])
            access_key, date, region, service, terminator = params["X-Amz-Credential"].split("/")
            signature = params["X-Amz-Signature"]
        except (KeyError, ValueError):
            return "malformed token"
        if (access_key, region, service, terminator) != (self.args.access_key, self.args.region, self.args.service, "aws4_request"):
            return "wrong credential scope"
        if params.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256" or params.get("X-Amz-SignedHeaders") != "host":
            return "wrong algorithm or signed headers"
        age = (datetime.datetime.now(datetime.timezone.utc) - stamp).total_seconds()
        if expires > 900 or age > min(expires, self.args.max_age) or age < -60:
            return f"expired (made {age:.0f} s ago)"
        unsigned = sorted((k, v) for k, v in pairs if k != "X-Amz-Signature")
        canonical_query = "&".join(f"{encode(k)}={encode(v)}" for k, v in unsigned)
        canonical = "\n".join(["GET", "/", canonical_query, f"host:{authority}", "", "host", EMPTY_SHA256])
        scope = f"{date}/{region}/{service}/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", params["X-Amz-Date"], scope, hashlib.sha256(canonical.encode()).hexdigest()])
        key = signing_key(self.args.secret_key, date, region, service)
        if not hmac.compare_digest(hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), signature):
            return "bad signature"
        return None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self.handle(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
            pass
        except Exception as e:  # noqa: BLE001 - a bug of ours or a message we do not parse
            self.log(f"error: {e!r}")
        finally:
            writer.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        length, code = struct.unpack("!II", await reader.readexactly(8))
        if code != SSL_REQUEST:
            self.log("rejected: no TLS")
            writer.write(error_response("28000", "TLS is required for IAM authentication"))
            await writer.drain()
            return
        writer.write(b"S")
        await writer.drain()
        await writer.start_tls(self.server_tls)
        (length,) = struct.unpack("!I", await reader.readexactly(4))
        startup_body = await reader.readexactly(length - 4)
        fields = startup_body[4:].split(b"\0")
        startup = dict(zip(fields[0::2], fields[1::2]))
        user = startup.get(b"user", b"").decode()
        writer.write(message(b"R", struct.pack("!I", 3)))  # AuthenticationCleartextPassword
        await writer.drain()
        kind, body = await read_message(reader)
        if kind != b"p":
            return
        token = body.rstrip(b"\0").decode(errors="replace")
        if self.to_tamper > 0:
            # As if the token had been altered on the way: one character of its signature.
            self.to_tamper -= 1
            token = token[:-1] + ("0" if token[-1:] != "0" else "1")
        problem = self.check(token, user)
        if problem is not None:
            self.log(f"rejected: {problem}")
            writer.write(error_response("28P01", f'PAM authentication failed for user "{user}"'))
            await writer.drain()
            return
        self.log(f"accepted {user}")
        backend_reader, backend_writer = await self.backend(startup_body, user)
        await asyncio.gather(self.pump(reader, backend_writer), self.pump(backend_reader, writer))

    async def backend(self, startup_body: bytes, user: str):
        """A connection to the real database as `user`, authenticated, with the startup burst
        (AuthenticationOk onwards) still unread."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.args.backend_port)
        writer.write(struct.pack("!II", 8, SSL_REQUEST))
        await writer.drain()
        if await reader.readexactly(1) != b"S":
            raise ConnectionError("the backend does not offer TLS")
        await writer.start_tls(self.backend_tls, server_hostname="localhost")
        writer.write(struct.pack("!I", len(startup_body) + 4) + startup_body)
        await writer.drain()
        kind, body = await read_message(reader)
        if kind != b"R" or struct.unpack("!I", body[:4])[0] != 10:
            raise ConnectionError("the backend did not ask for SCRAM")
        nonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = f"n=,r={nonce}"
        first = ("n,," + first_bare).encode()
        writer.write(message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first))
        await writer.drain()
        kind, body = await read_message(reader)
        server_first = body[4:].decode()
        attrs = dict(item.split("=", 1) for item in server_first.split(","))
        salted = hashlib.pbkdf2_hmac("sha256", self.args.backend_password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        auth_message = f"{first_bare},{server_first},{without_proof}".encode()
        client_signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, client_signature))
        writer.write(message(b"p", f"{without_proof},p={base64.b64encode(proof).decode()}".encode()))
        await writer.drain()
        kind, body = await read_message(reader)  # SASLFinal (or an error)
        if kind != b"R":
            raise ConnectionError(f"the backend refused {user}")
        return reader, writer

    async def pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            writer.close()


async def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as config:
        # cert, key, backend_port, backend_ca, backend_password, service ("rds-db" or "dsql"),
        # authority (the host[:port] a token must name), region, access_key, secret_key,
        # max_age (seconds a token is accepted after it was made), tamper_first (alter the first
        # N tokens received, as if on the way), log.
        args = types.SimpleNamespace(**json.load(config))
    server = await asyncio.start_server(Verifier(args).serve, "127.0.0.1", int(sys.argv[2]))
    with open(os.path.join(os.path.dirname(sys.argv[1]), "ready"), "w", encoding="utf-8"):
        pass
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
