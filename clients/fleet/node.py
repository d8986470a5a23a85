"""Where a fleet actor runs: its Ray node, the address Ray reports for it, its process."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from clients.fleet.messages import ActorInfo
from stream.config import LOOPBACK_HOSTS


@dataclass(frozen=True)
class Whereabouts:
    """An actor's node and process; ``incarnation`` changes with every (re)start."""

    node_id: str
    node_ip: str
    pid: int
    incarnation: str

    def as_dict(self) -> ActorInfo:
        return {
            "node_id": self.node_id,
            "node_ip": self.node_ip,
            "pid": self.pid,
            "incarnation": self.incarnation,
        }


def node_ip_address() -> str:
    """The address Ray reports for this node."""
    import ray

    address: Callable[[], str] = ray.util.get_node_ip_address
    return address()


def whereabouts() -> Whereabouts:
    """This actor's node (as Ray reports it), pid and a fresh incarnation id."""
    import ray

    ctx = ray.get_runtime_context()
    return Whereabouts(
        node_id=ctx.get_node_id(),
        node_ip=node_ip_address(),
        pid=os.getpid(),
        incarnation=uuid.uuid4().hex[:12],
    )


def is_loopback(ip: str) -> bool:
    return ip in LOOPBACK_HOSTS or ip.startswith("127.")


def tcp(ip: str, port: int) -> str:
    host = f"[{ip}]" if ":" in ip else ip
    return f"tcp://{host}:{port}"


def setup_actor_logging(level: str) -> None:
    """Log lines of an actor (Ray keeps them in the worker's log file and can forward them to
    the driver)."""
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
