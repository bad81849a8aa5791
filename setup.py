"""The compiled Avro codec (behest/_cavro.c), built when a C compiler is at hand.

`optional=True`: a failed compile never fails the install; behest then runs its generated
pure-Python codec (same objects, same bytes). Everything else is in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "behest._cavro",
            sources=["behest/_cavro.c"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ]
)
