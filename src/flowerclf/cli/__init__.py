"""The ``flowerclf`` command line.

Subcommands that need an install extra (``train``, ``export``, ``serve``, ``ui``...) import
it inside their handler: the base install (the runtime) must be able to parse every command,
print ``--help`` and run ``predict`` and ``benchmark`` without torch, Hydra or FastAPI. That
is the one place function-local imports are used for; everything in the base install is
imported at the top of each module.
"""
