from setuptools import setup

# Everything else is in pyproject.toml; this file only names the cffi builder.
setup(cffi_modules=["native/build_native.py:ffibuilder"])
