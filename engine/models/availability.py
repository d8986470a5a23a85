"""The demo source's offline default: the ``demo`` preset when the Hub weights cannot be had.

``promptcam run`` on the demo source uses the ``demo`` preset (weights shipped in the repo)
when the configured preset's Hub weights are neither in the Hugging Face cache nor fetchable now
(``HF_HUB_OFFLINE=1`` or the Hub unreachable: ``engine.models.hub``, one short request), unless
``--models`` or local weights were given. The launcher prints the one line :func:`demo_fallback`
returns and then checks the models as for any run.
"""

from __future__ import annotations

import logging

from engine.models import hub
from engine.models.presets import DEMO, hub_files
from stream.config import Config, ModelsConfig

log = logging.getLogger(__name__)


def unavailable(models: ModelsConfig, with_detector: bool) -> str | None:
    """Why the Hub weights ``models`` needs cannot be had now (None: cached, local, or the Hub
    answers)."""
    for repo_id, filename in hub_files(models, with_detector=with_detector):
        if hub.cached(repo_id, filename) is None:
            why = hub.unreachable(repo_id, filename)
            if why is not None:
                return f"{repo_id} is not cached and the Hub is unreachable: {why}"
    return None


def demo_fallback(cfg: Config, explicit_models: bool) -> tuple[Config, str | None]:
    """``cfg`` on the ``demo`` preset when every camera shows the demo source and the configured
    weights cannot be had (see the module docstring), and the line that says so (None: ``cfg``
    unchanged)."""
    m = cfg.models
    if explicit_models or m.sam2_checkpoint or m.detector or m.preset == DEMO:
        return cfg, None
    cameras = cfg.camera_settings().values()
    if not all(c.source.uri == "demo" for c in cameras):
        return cfg, None
    reason = unavailable(m, with_detector=any(c.engine.prompt.strip() for c in cameras))
    if reason is None:
        return cfg, None
    line = (
        f"promptcam: {m.preset} weights cannot be had ({reason}); the demo source runs on the "
        f"'{DEMO}' preset (trained on these scenes, shipped in configs/demo)"
    )
    return cfg.model_copy(update={"models": m.model_copy(update={"preset": DEMO})}), line
