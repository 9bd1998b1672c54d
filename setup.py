"""The compiled hot path (docs/design.md, "The compiled hot path"): the writer's decoder
(auditd_lite/capture/_decode.c), record digests (auditd_lite/_record_digests.c) and inserts
(auditd_lite/storage/_insert.c); everything else is in pyproject.toml.

Built against Python's stable ABI (3.11), so one ``.abi3.so`` each serves every python3 the
packages are for. ``optional``: where no compiler or Python headers are, the install goes on
and the writer runs the Python references (the daemon_started log line says which).
"""

from setuptools import Extension, setup


def compiled(name: str, source: str, **kw) -> Extension:
    return Extension(name, [source], py_limited_api=True, define_macros=[("Py_LIMITED_API", "0x030B0000")],
                     extra_compile_args=["-O2", "-Wall", "-Werror"], optional=True, **kw)


setup(ext_modules=[compiled("auditd_lite.capture._decode", "auditd_lite/capture/_decode.c"),
                   compiled("auditd_lite._record_digests", "auditd_lite/_record_digests.c",
                            libraries=["crypto"]),
                   compiled("auditd_lite.storage._insert", "auditd_lite/storage/_insert.c",
                            libraries=["sqlite3"])],
      options={"bdist_wheel": {"py_limited_api": "cp311"}})
