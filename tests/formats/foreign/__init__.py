"""Images as other tools write them (VirtualBox, VMware, Hyper-V, Virtual PC, Disk2VHD, old qemu).

Every builder writes into an empty directory and returns the name of the image to open.  The bytes are
built with imgscope's own construct declarations (``imgscope/formats/<fmt>/layout.py``), following the
format specifications and what those tools are documented to write; where a qemu-made image is the
natural starting point (qcow2, QED, VHDX) it is made with qemu-img and then rewritten with the same
declarations.  ``CASES`` maps a case name to (qemu format, builder), one module per format;
tests/formats/test_foreign.py compares imgscope's CLI with qemu-img 7.2 on each
(``random_history.compare``).
"""
from __future__ import annotations

from . import qcow2_qed, vdi, vhd, vhdx, vmdk

CASES = {**vhd.CASES, **vdi.CASES, **vmdk.CASES, **qcow2_qed.CASES, **vhdx.CASES}
NO_CONTENT = vhdx.NO_CONTENT
#: cases where qemu fails with a generic message ("Could not read file metadata: Input/output error",
#: "could not get cluster_offset") and imgscope names the damaged structure and offset instead, as its
#: hostile-input rule requires: exit codes and JSON are compared, the error text is not
OWN_ERRORS = {"vmdk-cowd-short-gd", "vmdk-sesparse-bad-entry"}
