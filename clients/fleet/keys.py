"""CURVE keys of the fleet's ZeroMQ links, handed out by the controller.

One server key pair for every side that binds (captures: frames; engines: tracks, annotated)
and one client key pair for every side that connects (engines to captures, the gateway to
engines). A binding side encrypts with its server key and admits, through a ZAP handler
(``zmq.auth``), only peers that present the fleet's client key; a connecting side must know the
server's public key. So nothing outside the fleet can read or inject frames or tracks, whatever
it can reach on the network. The keys travel to the actors through Ray (constructor arguments
and the controller's KV record): the Ray cluster itself is the trust boundary (README, security).

In an actor the keys become certificate files in a private temporary directory (``zmq.auth``
format), because ``bus.curve`` names key files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator


@dataclass(frozen=True)
class FleetKeys:
    """Z85-encoded CURVE key pairs (str, so they travel as JSON)."""

    server_public: str
    server_secret: str
    client_public: str
    client_secret: str

    @classmethod
    def generate(cls) -> FleetKeys:
        sp, ss = zmq.curve_keypair()
        cp, cs = zmq.curve_keypair()
        return cls(sp.decode(), ss.decode(), cp.decode(), cs.decode())

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> FleetKeys:
        return cls(**{k: str(d[k]) for k in asdict(cls("", "", "", ""))})


def _write_cert(path: Path, public: str, secret: str | None) -> None:
    lines = ["#   promptcam fleet CURVE certificate", "metadata", "curve"]
    lines.append(f'    public-key = "{public}"')
    if secret is not None:
        lines.append(f'    secret-key = "{secret}"')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")


class KeyFiles:
    """The fleet keys as certificate files in a private directory, removed by :meth:`close`."""

    def __init__(self, keys: FleetKeys) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="promptcam-fleet-keys-"))
        self.server = self.dir / "server.key_secret"
        self.server_public = self.dir / "server.key"
        self.client = self.dir / "client.key_secret"
        self.allowed = self.dir / "allowed"  # public keys a binding side admits (ZAP)
        self.allowed.mkdir(mode=0o700)
        _write_cert(self.server, keys.server_public, keys.server_secret)
        _write_cert(self.server_public, keys.server_public, None)
        _write_cert(self.client, keys.client_public, keys.client_secret)
        _write_cert(self.allowed / "client.key", keys.client_public, None)

    def curve_config(self) -> dict[str, str]:
        """``bus.curve`` for a side that both binds and connects (the four key files)."""
        return {
            "server_secret_key_file": str(self.server),
            "server_public_key_file": str(self.server_public),
            "client_secret_key_file": str(self.client),
            "client_public_key_file": str(self.allowed / "client.key"),
        }

    def authenticator(self, ctx: zmq.Context[zmq.Socket[bytes]]) -> ThreadAuthenticator:
        """A started ZAP handler on ``ctx`` admitting only the fleet's client key."""
        auth = ThreadAuthenticator(ctx)
        auth.start()
        auth.configure_curve(domain="*", location=str(self.allowed))
        return auth

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
