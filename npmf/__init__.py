"""npmf: rating-prediction recommenders in plain NumPy.

Two models from the classic Keras MovieLens tutorial, the embedding-dot
matrix factorisation (:mod:`npmf.models.mf`) and the embedding-concatenate
dense network (:mod:`npmf.models.mlp`), with every forward and backward pass
written by hand and checked against Keras twins kept in ``reference/``.
"""

__version__ = "0.1.0"
