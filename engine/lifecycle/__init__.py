"""The track lifecycle: explicit states (``states``), every threshold in one config with two
profiles (``config``), association as a cascade of stages over pluggable cues
(``association``), a constant-velocity Kalman motion model (``kalman``), appearance from the
model (``embedder``) and colour cues (``appearance``), the per-frame rules (``frames``), control
and queries (``registry``), the default lifecycle ``TrackManager`` (``manager``) and the
protocol the camera tracker receives a lifecycle through (``protocol``). docs/lifecycle.md
describes it in full; engine/track_manager.py keeps the long form of every rule."""
