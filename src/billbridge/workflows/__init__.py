"""Workflows: which Stripe events become which Customer.io calls (model, templates, planner)."""
