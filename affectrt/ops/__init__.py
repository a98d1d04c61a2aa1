"""affectrt.ops."""
