"""The pure core: scaling, architecture, cost, device profiles, fit and spec files.

Imports nothing outside the standard library, numpy, click and rich (tests/test_layers.py
enforces it), so ``edgeeff fit`` answers in a fraction of a second on any machine.
"""
