"""The track lifecycle: explicit states (``states``), its thresholds in one config
(``config``), a constant-velocity Kalman motion model (``kalman``) and the protocol the camera
tracker receives it through (``protocol``). ``engine.track_manager.TrackManager`` is the
default lifecycle. docs/lifecycle.md describes it in full."""
