"""digitscan: read handwritten digits from scanned images."""
