"""Benchmarks of npmf against Keras, Surprise and Cornac; see ``run.py``."""
