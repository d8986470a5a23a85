"""Open-vocabulary detectors: one stateless API and the one loading path every family shares
(``base.py``), one module per family; the registry rows and loading by preset, directory or Hub
id are in ``engine/models/`` (``registry.py``, ``detectors.py``)."""
