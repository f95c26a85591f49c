"""Delivery: the /batch/ wire format, the delivery policy, the HTTP endpoint and the sender."""
