"""The web client: live WebRTC view and control page of every camera, and the offline page
(``promptcam web``).

Modules: ``server`` (aiohttp app, routes, auth, metrics, entry point), ``camera_list`` (where the
camera list comes from: the engine, one fixed camera, or a caller's lister), ``channels`` (what
is served for each camera), ``camera_state`` (the site monitor and each camera's banner),
``video`` (one shared encoder per camera and its viewers), ``feeds`` (newest-message SUB feeds
from the engine, per camera), ``ice`` (loopback-only ICE), ``jobs`` (offline jobs of the upload
page), ``static/`` (the pages).
"""
