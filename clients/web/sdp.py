"""Checks of an SDP offer before aiortc parses it.

aiortc's parser asserts on some malformed values (a payload type of 300, a media line it cannot
match, a short candidate) instead of raising a parse error; these checks name what is wrong in
one line, and the offer route also treats an ``AssertionError`` from the parser as a malformed
offer (400), never as a server error.
"""

from __future__ import annotations

import re

MAX_LINES = 4000
_MEDIA = re.compile(r"^m=(\S+) (\d+)(?:/\d+)? ([A-Za-z/]+) (.+)$")
_PT_ATTRS = ("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:")
FORBIDDEN_PAYLOAD_TYPES = range(72, 77)  # RTCP packet types (RFC 5761)


def _payload_type_problem(pt: str) -> str | None:
    if not pt.isdigit() or int(pt) > 127:
        return f"payload type {pt[:20]!r} is not a number from 0 to 127"
    if int(pt) in FORBIDDEN_PAYLOAD_TYPES:
        return f"payload type {pt} is reserved (72-76 clash with RTCP)"
    return None


def offer_problem(sdp: str) -> str | None:
    """What makes ``sdp`` unusable as a video offer, in one line, or None."""
    if not sdp.startswith("v=0"):
        return "it must start with v=0"
    lines = sdp.splitlines()
    if len(lines) > MAX_LINES:
        return f"it has {len(lines)} lines (at most {MAX_LINES})"
    video = False
    for n, line in enumerate(lines, 1):
        if line.startswith("m="):
            m = _MEDIA.match(line)
            if m is None:
                return f"line {n}: a media line is m=<media> <port> <protocol> <formats>"
            kind, port, proto, fmts = m.groups()
            if int(port) > 65535:
                return f"line {n}: port {port[:20]} is not 0-65535"
            if kind in ("audio", "video") or "RTP" in proto:
                for pt in fmts.split():
                    problem = _payload_type_problem(pt)
                    if problem:
                        return f"line {n}: {problem}"
            video = video or kind == "video"
        elif line.startswith(_PT_ATTRS):
            pt = line.split(":", 1)[1].split(" ", 1)[0]
            problem = None if pt == "*" else _payload_type_problem(pt)
            if problem:
                return f"line {n}: {problem}"
        elif line.startswith("a=candidate:") and len(line.split()) < 8:
            return f"line {n}: a candidate has at least 8 fields"
    if not video:
        return "it has no video section (m=video)"
    return None
