"""The web client: live WebRTC view, control page and offline page (``promptcam web``).

Modules: ``server`` (aiohttp app, routes, auth, metrics, entry point), ``video`` (the newest-frame
source track and its relay to viewers), ``feeds`` (newest-message SUB feeds from the engine),
``ice`` (loopback-only ICE), ``jobs`` (offline jobs of the upload page), ``static/`` (the pages).
"""
