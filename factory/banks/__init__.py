"""Loading and checking the seed banks (traits and rules)."""
