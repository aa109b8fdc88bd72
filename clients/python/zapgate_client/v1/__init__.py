"""Generated from proto/zapgate/v1 by `python proto/generate.py`; do not edit.

The same code as the server's `zapgate.v1`, with its imports pointing here. The descriptors
are byte-identical, so both copies can be loaded in one process and share message classes.
"""
