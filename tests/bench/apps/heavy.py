"""A bench app that imports ~50 MB of Python objects before serving (the
demo server otherwise): the preload-vs-spawn memory comparison of issue 6.

The data stands in for a large application's modules (code objects, tables,
caches built at import). With --preload it is built once in the fork server
and shared copy-on-write; spawned workers each build their own.
"""

from pycluster.examples.hello import main  # noqa: F401  - the server

MB = 50
# ~50 MB: 400k small tuples of strings and ints, the shape of module-level data.
TABLE = [(f"key-{i:08d}", i, f"value-{i * 7:010d}") for i in range(MB * 3400)]
INDEX = {row[0]: row for row in TABLE}
