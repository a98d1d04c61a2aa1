"""affectrt.media."""
