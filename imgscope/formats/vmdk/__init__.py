"""VMDK images: hosted sparse, stream-optimized, flat and split extents (docs/formats/vmdk.md)."""
