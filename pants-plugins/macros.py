"""Pants BUILD-file macros for the pycontainerd distributions.

Loaded as a prelude (``[GLOBAL] build_file_prelude_globs``). Pants 2.17 takes a
Python target's source root from its BUILD file's directory, so each package
has three one-line BUILD files:

- ``packages/<name>/BUILD``:       ``pycontainerd_distribution()``
- ``packages/<name>/src/BUILD``:   ``pycontainerd_sources()``
- ``packages/<name>/tests/BUILD``: ``pycontainerd_tests()``

Globs are recursive, so new modules, tests and conftest files need no edits.
"""


def pycontainerd_distribution():
    """The wheel and sdist of ``packages/<name>``, built by hatchling from pyproject.toml."""
    path = build_file_dir()
    file(name="pyproject", source="pyproject.toml")
    files(name="dist_files", sources=["README.md", "src/**/py.typed", "proto/**/*.proto"])
    python_distribution(
        name="dist",
        dependencies=[":pyproject", ":dist_files", f"{path}/src:src"],
        provides=python_artifact(name=f"pycontainerd-{path.name}"),
        generate_setup=False,
    )


def pycontainerd_sources():
    """Every module (hand-written and generated) under ``src/``, plus package data."""
    python_sources(name="src", sources=["**/*.py", "**/*.pyi"], dependencies=[":data"])
    # Package data read through importlib.resources (py.typed keeps it non-empty).
    resources(name="data", sources=["**/py.typed", "**/*.json", "**/*.toml"])


def pycontainerd_tests(extra_dependencies=(), **kwargs):
    """Every ``test_*.py`` under ``tests/``, its conftest/helper modules and data files.

    The tests depend on the whole workspace (``//:workspace``: every
    distribution's sources and every third-party requirement, as ``uv sync``
    installs them), since the daemons, shims and ``ctr`` processes they start
    import modules no test imports, and on the root conftest (see conftest.py).
    """
    python_test_utils(name="test_utils", sources=["**/*.py", "!**/test_*.py"])
    # Test data keeps its path (test files are not stripped): Path(__file__).parent / ...
    files(name="test_data", sources=["**/*", "!**/*.py", "!**/*.pyc", "!BUILD"])
    # One pytest process per package (as `uv run pytest` runs one for everything):
    # per-file processes spent most of a run starting pytest and its workers, and
    # every test depends on the whole workspace anyway, so nothing caches finer.
    kwargs.setdefault("batch_compatibility_tag", build_file_dir().parent.name)
    python_tests(
        name="tests",
        sources=["**/test_*.py"],
        dependencies=[
            ":test_utils",
            ":test_data",
            "//:workspace",
            "//:root_conftest",
            *extra_dependencies,
        ],
        **kwargs,
    )
