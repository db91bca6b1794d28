"""Fuzz targets for rmqsniff's decoders (see ``fuzz/README.md``)."""
