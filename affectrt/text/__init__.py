"""affectrt.text."""
