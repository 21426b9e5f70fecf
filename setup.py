"""Build hook: cffi compiles native/*.c into imgscope._native (API mode, out of line)."""
from setuptools import setup

setup(cffi_modules=["native/build_ffi.py:ffibuilder"])
