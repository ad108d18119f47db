"""Billing profiles: the Stripe objects projection, profile attributes, semantic events."""
