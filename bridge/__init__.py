"""Interoperability between nnxlib and Flax Linen (``ToNNX``, ``ToLinen``).

The bridge arrives in a later issue; for now this package is an empty placeholder so that
it installs alongside ``nnxlib``. It will be the only place in the project that imports
``flax``.
"""
