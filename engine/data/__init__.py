"""Dataset side: dataset readers, image loading, face finding."""
