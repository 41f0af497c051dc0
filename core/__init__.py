"""What every room needs and no room owns: the error root (``core.errors``) and the settings (``core.config``).

A leaf: it imports none of the rooms (``schemas``, ``producers``, ``consumers``, ``projections``) nor the facade
(``agl``), so dependencies point one way: core <- schemas <- producers, projections <- consumers <- agl.
"""
