"""The examples in the reference's docstrings are executed, so the documentation cannot drift from the code."""

import doctest
import importlib

import numpy as np
import pytest

MODULES = ("mxfp4.reference.quantize", "mxfp4.reference.dequantize", "mxfp4.reference.pack", "mxfp4.reference.moe_sort", "mxfp4.spec")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), extraglobs={"np": np}, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples in {name} failed (run doctest -v)"
