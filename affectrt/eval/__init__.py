"""affectrt.eval."""
