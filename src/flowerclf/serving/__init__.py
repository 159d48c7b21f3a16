"""The REST service: FastAPI app factory, routes, limits, metrics and a load-test client.

Build an app with :func:`flowerclf.serving.app.create_app`; nothing here runs at import.
"""

ENV_PREFIX = "FLOWERCLF_SERVE_"  # settings also come from FLOWERCLF_SERVE_<NAME>
