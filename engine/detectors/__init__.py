"""Open-vocabulary detectors: one stateless API (``base.py``), one module per family, loading by
preset, directory or Hub id (``loading.py``)."""
