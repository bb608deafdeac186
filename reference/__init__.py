"""Keras twins of the npmf models, for parity tests and benchmarks only.

Nothing in :mod:`npmf` imports this package at import time: it needs
TensorFlow, which only the ``test`` and ``bench`` extras install. The CLI's
``parity`` command imports it lazily.

Modules
-------
keras_models
    The tutorial's two Keras models built from an npmf configuration, weight
    transfer both ways, gradients keyed like npmf's, and ``fit`` on
    pre-permuted arrays.
parity
    Step-for-step comparison of npmf and Keras: step-1 gradients, weights
    after N steps, and the epoch loss.
broadcast_demo
    Measures the tutorial's broadcast RMSE metric against the true RMSE.
"""
