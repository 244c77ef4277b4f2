"""Shipped real radiographs (FracAtlas, CC BY 4.0): images, ``gallery.json`` and README.

Read it with :func:`fracture.data.gallery.load_gallery`; rebuild it with
``python -m fracture.gallery.build`` (see :mod:`fracture.gallery.build`).
"""
