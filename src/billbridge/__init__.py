"""Billbridge: Stripe webhooks in, Customer.io calls out, nothing lost or doubled."""

from __future__ import annotations

__version__ = "0.1.0"
