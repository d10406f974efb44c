"""xtcdr: teaching and replication package for XTransferCDR (Liu & Jin, AAAI 2025).

Data flows left to right through one module per stage::

    datasets -> preprocess -> pairing -> model + losses -> train -> evaluate (+ baselines) -> plots

``pipeline`` chains the stages with caching so that every notebook also runs standalone.
"""
__version__ = "0.2.0"
