"""Joining a Ray cluster (or starting a local one) and checking it can run the fleet.

``connect`` fails fast with one line on an address that does not answer (a TCP check of the GCS
port first), and gives up after ``fleet.connect_timeout_s`` on one that answers but is no Ray
cluster (Ray's own retries took over 40 s there), with one line and exit status 2. What Ray
prints while joining (its C++ core writes warnings straight to file descriptor 2: twenty on an
address it cannot use) is caught and said in one line. Then ``check_resources`` turns the
fleet section into what Ray schedules (engines, GPUs per engine) or says which resource the
cluster lacks. A local instance (no ``--address``) is a one-node cluster bound to loopback,
whose processes end with the fleet process even when it is SIGKILLed (``clients.fleet.reaper``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO

from clients.fleet.node import is_loopback
from stream.config import Config
from stream.errors import PromptcamError

log = logging.getLogger(__name__)

# Ray reads this when it is imported: "0" makes a local instance use the loopback address as
# its node address (and bind there), instead of the machine's outward address.
LOCAL_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
REACH_TIMEOUT_S = 3.0


class FleetError(PromptcamError):
    """The fleet cannot start or a fleet command cannot be carried out; one line."""


def namespace(cfg: Config) -> str:
    return f"promptcam-{cfg.fleet.name}"


def check_reachable(address: str, timeout: float = REACH_TIMEOUT_S) -> None:
    """A TCP connection to ``HOST:PORT`` (the GCS), or a one-line ``FleetError``."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise FleetError(f"bad Ray address {address!r}: expected HOST:PORT (or auto)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        why = e.strerror or e.__class__.__name__
        raise FleetError(f"cannot reach the Ray cluster at {address}: {why}") from None


_RAY_PREFIX_RE = re.compile(r"^\[[^\]]*\]\s*(?:[\w./-]+:\d+:\s*)?")


def summarise_ray_output(text: str) -> str:
    """What Ray printed, in a few words: ``N lines from Ray, first: ...`` ('' for nothing)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return ""
    first = _RAY_PREFIX_RE.sub("", lines[0])[:200]
    return f"{len(lines)} line{'s' if len(lines) != 1 else ''} from Ray, first: {first}"


def _read(f: IO[bytes]) -> str:
    f.flush()
    f.seek(0)
    return f.read(64 * 1024).decode(errors="replace")


@contextlib.contextmanager
def bounded_join(address: str, timeout_s: float) -> Iterator[Callable[[], str]]:
    """Run the body (``ray.init``) with file descriptor 2 caught in a temporary file; yields a
    function that summarises what was caught. Past ``timeout_s`` the process ends: one line
    on the real stderr and exit status 2 (a ``ray.init`` stuck in Ray's C++ retries cannot be
    interrupted otherwise); only a command-line process calls this."""
    sys.stderr.flush()
    saved = os.dup(2)
    caught = tempfile.TemporaryFile()  # noqa: SIM115  # closed below, or by the exit
    os.dup2(caught.fileno(), 2)
    done = threading.Event()

    def expire() -> None:
        if done.wait(timeout_s):
            return
        said = summarise_ray_output(_read(caught))
        line = (
            f"promptcam fleet: error: no Ray cluster answered at {address} within "
            f"{timeout_s:g}s (fleet.connect_timeout_s){f'; {said}' if said else ''}"
        )
        os.write(saved, (line.replace("\n", " ") + "\n").encode())
        os._exit(2)

    threading.Thread(target=expire, name="ray-join-timeout", daemon=True).start()
    try:
        yield lambda: summarise_ray_output(_read(caught))
    finally:
        done.set()
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        caught.close()


@dataclass(frozen=True)
class Connection:
    address: str
    local: bool  # a Ray instance this process started (it ends with this process)
    node_id: str  # the node this process runs on


def connect(address: str | None, cfg: Config, *, log_to_driver: bool) -> Connection:
    """Join the cluster at ``address`` ("auto": the one ``ray start`` started on this host), or
    start a local one-node instance when ``address`` is None."""
    if address is None:
        os.environ.setdefault(LOCAL_LOOPBACK_ENV, "0")
        from clients.fleet.reaper import start_reaper

        start_reaper()  # a SIGKILLed fleet leaves no Ray process behind
    elif address != "auto":
        check_reachable(address, min(REACH_TIMEOUT_S, cfg.fleet.connect_timeout_s))
    import ray

    init = functools.partial(
        ray.init,
        namespace=namespace(cfg),
        logging_level=logging.WARNING,
        log_to_driver=log_to_driver,
    )
    said = ""
    try:
        if address is None:
            ctx = init(num_cpus=cfg.fleet.local_cpus, include_dashboard=False)
        else:
            with bounded_join(address, cfg.fleet.connect_timeout_s) as summary:
                try:
                    ctx = init(address=address)
                finally:
                    said = summary()
            if said:
                log.warning("joining the Ray cluster at %s: %s", address, said)
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        where = address or "a local instance"
        raise FleetError(
            f"cannot connect to the Ray cluster ({where}): {first[:200]}"
            + (f" ({said})" if said else "")
        ) from None
    info: dict[str, object] = getattr(ctx, "address_info", {})
    return Connection(
        address=str(info.get("gcs_address", address or "")),
        local=address is None,
        node_id=ray.get_runtime_context().get_node_id(),
    )


BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


def ray_nodes() -> list[dict[str, object]]:
    """``ray.nodes()``: one dict per node, as Ray gives them."""
    import ray

    nodes: Callable[[], list[dict[str, object]]] = ray.nodes
    return nodes()


def alive_nodes() -> list[dict[str, object]]:
    return [n for n in ray_nodes() if n.get("Alive")]


def node_resources(node: Mapping[str, object]) -> dict[str, float]:
    """A node's resources (``Resources`` of ``ray.nodes()``), by name."""
    res = node.get("Resources")
    return {str(k): float(v) for k, v in res.items()} if isinstance(res, Mapping) else {}


def resource_labels(resources: Mapping[str, object]) -> list[str]:
    """The custom resources among ``resources`` (``ray start --resources``), sorted."""
    return sorted(k for k in resources if k not in BUILTIN_RESOURCES and not k.startswith("node:"))


def resolve_fleet(cfg: Config) -> Config:
    """``cfg`` with the fleet section resolved against the cluster (engine count, GPUs per
    engine), or a ``FleetError`` naming what the cluster lacks."""
    nodes = alive_nodes()
    resources: dict[str, float] = {}
    for n in nodes:
        for k, v in node_resources(n).items():
            resources[k] = resources.get(k, 0.0) + v
    f = cfg.fleet
    gpus = resources.get("GPU", 0.0)
    engine_gpus = f.engine_gpus if f.engine_gpus is not None else (1.0 if gpus else 0.0)
    engines = f.engines or (max(1, int(gpus // engine_gpus)) if engine_gpus else 1)
    if engine_gpus and gpus < engines * engine_gpus:
        raise FleetError(
            f"{engines} engines need {engine_gpus:g} GPU each, but the cluster has {gpus:g} GPUs "
            "(set fleet.engines, or fleet.engine_gpus: 0 for CPU engines)"
        )
    cpus = resources.get("CPU", 0.0)
    if engines * f.engine_cpus > cpus:
        raise FleetError(
            f"{engines} engines need {f.engine_cpus:g} CPU each, but the cluster has {cpus:g} CPUs "
            "(set fleet.engines or fleet.engine_cpus)"
        )
    labels = resource_labels(resources)
    wanted = [(f"fleet.engine_resources[{k}]", r) for k, r in enumerate(f.engine_resources)]
    wanted += [(f"fleet.capture_resources.{c}", r) for c, r in f.capture_resources.items()]
    for key, label in wanted:
        if label not in resources:
            raise FleetError(
                f"{key}: no node of the cluster has resource {label!r} (nodes have: "
                f"{', '.join(labels) or 'no custom resources'}); start one with "
                f"ray start ... --resources='{{\"{label}\": 1}}'"
            )
    curve = f.curve
    if curve == "auto":  # links may cross hosts: more than one node, or a node off loopback
        off_host = any(not is_loopback(str(n.get("NodeManagerAddress", ""))) for n in nodes)
        curve = "on" if len(nodes) > 1 or off_host else "off"
    tree = cfg.model_dump(mode="json")
    tree["fleet"].update(engines=engines, engine_gpus=engine_gpus, curve=curve)
    if engine_gpus and cfg.models.device == "auto":
        tree["models"]["device"] = "cuda"
    return Config.model_validate(tree)


def named_actors(ns: str) -> list[str]:
    """Names of the live named actors in namespace ``ns``."""
    from ray.util import list_named_actors

    return sorted(a["name"] for a in list_named_actors(all_namespaces=True) if a["namespace"] == ns)
