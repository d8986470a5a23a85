"""Every model promptcam loads, in one place: the registry of families (``registry.py``: name,
kind, the model types each reads, its loader), the presets built on them (``presets.py``), the
loading paths (``loading.py``: the segmenter kernel and the detector a configuration names;
``sam2.py``: Meta's sam2 package; ``video.py``: transformers video trackers; ``detectors.py``:
every detector family by preset, directory or Hub id; ``pretrained.py``: pretrained or seeded
random weights) and the Hugging Face Hub (``hub.py``, ``hub_fetch.py``, ``availability.py``).

A new family is its implementation file plus one row of ``registry.FAMILIES``. Modules are
imported by their path (``engine.models.presets``, ...): this package imports nothing itself,
so listing presets loads no model code."""
