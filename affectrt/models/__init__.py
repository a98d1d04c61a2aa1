"""affectrt.models."""
