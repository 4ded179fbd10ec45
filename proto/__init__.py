"""The node wire contract: the two .proto files and their generated modules.

Regenerate with ``python -m proto.generate``; a test fails when the committed
modules differ from a fresh generation.
"""
