"""The one compiled module (auditd_lite/_record_digests.c); everything else is in pyproject.toml.

Built against Python's stable ABI (3.11), so one ``.abi3.so`` serves every python3 the
packages are for. ``optional``: where no compiler or Python headers are, the install goes on
and chain.row_digests uses its Python reference (the daemon_started log line says which).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("auditd_lite._record_digests", ["auditd_lite/_record_digests.c"],
                             py_limited_api=True, define_macros=[("Py_LIMITED_API", "0x030B0000")],
                             libraries=["crypto"], extra_compile_args=["-O2", "-Wall", "-Werror"],
                             optional=True)],
      options={"bdist_wheel": {"py_limited_api": "cp311"}})
