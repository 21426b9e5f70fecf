"""QED (QEMU Enhanced Disk): header, two-level tables, qemu-compatible check and repair plan."""
