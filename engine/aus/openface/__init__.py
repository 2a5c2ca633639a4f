"""OpenFace 2.2 static AU pipeline, our own implementation (no OpenFace code)."""
