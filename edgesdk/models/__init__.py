"""The models that ship inside PyPI packages (zoo) and Whisper: sources for convert(), not part of it."""
