"""Delivery: the COR client and the worker that drains the outbox."""
