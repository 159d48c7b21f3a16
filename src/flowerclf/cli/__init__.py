"""The ``flowerclf`` command line."""
