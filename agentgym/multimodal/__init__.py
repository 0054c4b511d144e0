"""Images in episodes: verl's VLM rows, the vision processor's token expansion, and per-episode image state."""
