"""VHDX images: headers, region tables, metadata, BAT and log (docs/formats/vhdx.md)."""
