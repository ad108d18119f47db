"""Delivery: the worker loop, the executor of one delivery, and the retry policy."""
