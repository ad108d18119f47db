"""Stripe side of Billbridge: signatures, event parsing, sample events and API reads.

Inside this package `import stripe` is the official SDK (absolute imports); import the
modules here as `billbridge.stripe.signature`, `billbridge.stripe.events`, ...
"""

from __future__ import annotations
