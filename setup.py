"""Build script: the pure-Python package today; the Cython/OpenMP backend's
extension modules are declared here (issue #3) so ``pip install .`` builds them."""

from setuptools import setup

ext_modules: list = []

setup(ext_modules=ext_modules)
