"""VDI (VirtualBox): header, block map, qemu-compatible check, differencing-parent lookup."""
