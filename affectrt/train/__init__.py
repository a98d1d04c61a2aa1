"""affectrt.train."""
