"""``promptcam engine``: the engine process's entry point (see ``engine.service``)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType

from engine.service.loop import EngineProcess
from engine.state import KeptState, StateFile
from stream.config import Config
from stream.threads import ThreadDeath

log = logging.getLogger(__name__)


def main(cfg: Config, args: argparse.Namespace) -> int:
    from setproctitle import setproctitle

    from engine.build import build_multi_engine

    setproctitle("promptcam: engine")
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    death = ThreadDeath(stop).install()
    state = None
    kept = KeptState()
    if cfg.engine.state_file is not None:  # before the models load: a second engine stops here
        state = StateFile(cfg.engine.state_file)
        state.lock()
        kept = state.load()
    engine = build_multi_engine(cfg)
    proc = EngineProcess(cfg, engine, stop, kept.cameras, state_file=state, kept_ids=kept.ids)
    return death.exit_code(proc.run())
