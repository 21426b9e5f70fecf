"""VHD (qemu: "vpc") images: fixed, dynamic and differencing (docs/formats/vhd.md)."""
