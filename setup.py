"""The native build: C extensions compiled by `pip install` with the machine's C compiler and
Python headers (everything else is in pyproject.toml). Each has a pure-Python twin that runs
when KLEDGER_PURE=1 or when the extension is missing; tests/test_native.py checks the two agree
and that the native one is what runs otherwise (docs/node.md "Native build")."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "kledger.node.chain._canonical_native",
            sources=["proto/kledger/node/chain/_canonical.c"],
            extra_compile_args=["-O2", "-Wall"],
        ),
        Extension(
            "kledger.node.storage._state_tree_native",
            sources=["proto/kledger/node/storage/_state_tree.c"],
            extra_compile_args=["-O2", "-Wall"],
        ),
    ]
)
