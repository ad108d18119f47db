"""Alerts: grouped messages when deliveries fail permanently or the queue stalls."""
