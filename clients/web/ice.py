"""ICE restricted to loopback (``web.ice_loopback_only``).

aioice gathers a host candidate on every address of every interface and skips 127.0.0.1.
With loopback-only ICE we make it gather on the loopback addresses only (every 127.0.0.0/8
address that ``lo`` holds, 127.0.0.1 included), and we drop every non-loopback candidate from
offers and answers, so no packet of a WebRTC session ever leaves the host. No STUN or TURN
server is configured either (aiortc would otherwise contact a public STUN server).

Browsers ignore loopback candidates unless told otherwise (Chromium:
``--allow-loopback-in-peer-connection``); tests and the browser test run in a network
namespace that has only ``lo`` (see tests/netns.py).
"""

from __future__ import annotations

import ipaddress
import logging

import aioice.ice
import ifaddr
from aiortc import RTCConfiguration

log = logging.getLogger(__name__)

_original_get_host_addresses = aioice.ice.get_host_addresses


def loopback_addresses() -> list[str]:
    """IPv4 loopback addresses of this host (network namespace), 127.0.0.1 first."""
    found = {"127.0.0.1"}
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and ipaddress.ip_address(ip.ip).is_loopback:
                found.add(ip.ip)
    return sorted(found, key=lambda a: (a != "127.0.0.1", a))


def _loopback_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return loopback_addresses() if use_ipv4 else []


def restrict_ice_to_loopback(enabled: bool = True) -> None:
    """Make aioice (process-wide) gather host candidates on loopback addresses only."""
    aioice.ice.get_host_addresses = (
        _loopback_host_addresses if enabled else _original_get_host_addresses
    )
    if enabled:
        log.info("ICE restricted to loopback: %s", ", ".join(loopback_addresses()))


def rtc_configuration() -> RTCConfiguration:
    """No STUN/TURN servers: host candidates only."""
    return RTCConfiguration(iceServers=[])


def _candidate_is_loopback(line: str) -> bool:
    # a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ ...
    fields = line.split()
    if len(fields) < 6:
        return False
    try:
        return ipaddress.ip_address(fields[4]).is_loopback
    except ValueError:  # an mDNS name (xxx.local) or garbage: not loopback
        return False


def filter_sdp_to_loopback(sdp: str) -> tuple[str, int]:
    """The SDP without its non-loopback candidates, and how many were dropped."""
    kept: list[str] = []
    dropped = 0
    for line in sdp.splitlines():
        if line.startswith("a=candidate:") and not _candidate_is_loopback(line[2:]):
            dropped += 1
            continue
        kept.append(line)
    return "\r\n".join(kept) + "\r\n", dropped
