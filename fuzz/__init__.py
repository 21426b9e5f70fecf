"""Fuzzing and structural mutation of disk images (docs/security.md).

Not part of the installed package: these modules drive imgscope with hostile
input.  ``seeds`` builds small real images with qemu-img (the test oracle),
``mutators`` locates every structure of a seed from the layout declarations
and damages it, ``exercise`` runs the whole public API on the result and
says whether it failed cleanly.  ``fuzz_images.py`` is the atheris harness;
the hypothesis test ``tests/hostile/test_mutations.py`` uses the same pieces.
"""
