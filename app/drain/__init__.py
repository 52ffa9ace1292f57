"""Draining work tables: the drainer (rounds of claim -> work under a kept-alive lease) and
the retry policy its users share (the detach worker, the Graph resolver, the Okta checker)."""

from app.drain.drainer import Claim, Drained, Drainer, Failed, bug
from app.drain.retry import RetryPolicy, decide
from app.rounds import utcnow

__all__ = ["Claim", "Drained", "Drainer", "Failed", "RetryPolicy", "bug", "decide", "utcnow"]
