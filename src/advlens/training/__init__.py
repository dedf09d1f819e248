"""Training of the shipped demo model."""
