"""The foundation every app imports (healthchecks' hc/lib): the settings reader, the error
envelope, metrics, crypto, addresses and the hybrid middleware base. It imports nothing of
the project above it (tests/unit/test_import_layers.py)."""
