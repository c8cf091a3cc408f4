"""Sample apps built only on edgesdk's public API: classify (images), speech (VAD + wake word)."""
