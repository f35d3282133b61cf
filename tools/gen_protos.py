"""Generate the Python protobuf/gRPC modules of pycontainerd-api.

Compiles every ``.proto`` under ``packages/api/proto`` with the pinned
grpcio-tools (protoc + the gRPC Python plugin) and mypy-protobuf, and writes
``*_pb2.py``, ``*_pb2.pyi``, ``*_pb2_grpc.py`` and ``*_pb2_grpc.pyi`` next to
the hand-written code in ``packages/api/src``. gRPC modules are only kept for
files that declare a service, so message-only files (and the ttrpc code that
must not import grpc) get no ``_pb2_grpc`` module.

Usage::

    uv run python tools/gen_protos.py          # regenerate in place
    uv run python tools/gen_protos.py --check  # exit 1 if committed code drifted

``--check`` generates into a temporary directory and compares byte for byte;
it lists every file that differs, is missing or is stale (a committed
generated module whose ``.proto`` is gone).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2

REPO = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO / "packages" / "api" / "proto"
OUT_ROOT = REPO / "packages" / "api" / "src"
# Generated code lives under this package; it is a regular package whose
# __init__.py is hand-written.
GEN_PACKAGE = Path("pycontainerd") / "api"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


class GenerationError(RuntimeError):
    """protoc or one of its plugins failed."""


def _show(path: Path) -> str:
    """Render a path relative to the repository when it is inside it."""
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def _is_generated(path: Path) -> bool:
    return path.name.endswith(GENERATED_SUFFIXES)


def _proto_files() -> list[Path]:
    """Return every .proto under the proto root, relative to it, sorted."""
    return sorted(p.relative_to(PROTO_ROOT) for p in PROTO_ROOT.rglob("*.proto"))


def _include_dirs() -> list[Path]:
    """Return protoc include directories: ours, protobuf's and googleapis'."""
    tools_spec = importlib.util.find_spec("grpc_tools")
    if tools_spec is None or tools_spec.origin is None:
        raise GenerationError("grpc_tools is not installed")
    well_known = Path(tools_spec.origin).parent / "_proto"
    dirs = [PROTO_ROOT, well_known]
    rpc_spec = importlib.util.find_spec("google.rpc")
    for location in (rpc_spec.submodule_search_locations or []) if rpc_spec else []:
        candidate = Path(location).parent.parent
        if (candidate / "google" / "rpc" / "status.proto").is_file():
            dirs.append(candidate)
            break
    else:
        raise GenerationError("google/rpc/status.proto not found: install googleapis-common-protos")
    return dirs


def _plugin(name: str) -> Path:
    """Locate a protoc plugin installed next to the running interpreter."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file():
        return candidate
    found = shutil.which(name)
    if found is None:
        raise GenerationError(f"protoc plugin {name} not found (is mypy-protobuf installed?)")
    return Path(found)


def generate(out_dir: Path) -> list[Path]:
    """Compile all protos into ``out_dir``; return generated files (relative).

    Raises:
        GenerationError: protoc reported an error.
    """
    protos = _proto_files()
    if not protos:
        raise GenerationError(f"no .proto files under {_show(PROTO_ROOT)}")
    descriptor_set = out_dir / "descriptors.pb"
    args = [
        "grpc_tools.protoc",
        *(f"--proto_path={d}" for d in _include_dirs()),
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        f"--descriptor_set_out={descriptor_set}",
        *(str(p) for p in protos),
    ]
    # protoc runs in a child process so that the plugins' progress chatter
    # ("Writing mypy to ...") can be dropped while real diagnostics are kept.
    proc = subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in proc.stderr.splitlines():
        if not line.startswith("Writing mypy to "):
            print(line, file=sys.stderr)
    if proc.returncode != 0:
        raise GenerationError("protoc failed (see messages above)")

    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    descriptor_set.unlink()
    without_services = {f.name for f in files.file if not f.service}
    for name in without_services:
        stem = name.removesuffix(".proto")
        for suffix in ("_pb2_grpc.py", "_pb2_grpc.pyi"):
            (out_dir / f"{stem}{suffix}").unlink(missing_ok=True)
    return sorted(p.relative_to(out_dir) for p in out_dir.rglob("*") if _is_generated(p))


def _package_dirs(generated: list[Path]) -> list[Path]:
    """Directories (relative) whose ``__init__.py`` the generator provides.

    Those are the directories between ``pycontainerd/api`` and a generated
    module that hold no hand-written module: a directory with hand-written
    code (for example ``ttrpc/``) is a package its owner maintains.
    """
    dirs: set[Path] = set()
    for path in generated:
        parent = path.parent
        while parent != GEN_PACKAGE and GEN_PACKAGE in parent.parents:
            dirs.add(parent)
            parent = parent.parent
    return sorted(d for d in dirs if not _has_handwritten_code(OUT_ROOT / d))


def _has_handwritten_code(directory: Path) -> bool:
    return any(
        p.suffix == ".py" and p.name != "__init__.py" and not _is_generated(p)
        for p in directory.glob("*.py")
    )


def _committed() -> set[Path]:
    base = OUT_ROOT / GEN_PACKAGE
    return {p.relative_to(OUT_ROOT) for p in base.rglob("*") if _is_generated(p)}


def _sync(*, apply: bool) -> list[str]:
    """Regenerate into a temporary directory and compare with the tree.

    Without ``apply``, return what differs (``missing:``, ``differs:``,
    ``stale:``); with it, make the tree match and return what changed
    (``wrote:``, ``removed:``).
    """
    out: list[str] = []
    with tempfile.TemporaryDirectory(prefix="gen-protos-") as tmp:
        tmp_dir = Path(tmp)
        generated = generate(tmp_dir)
        for rel in generated:
            target = OUT_ROOT / rel
            data = (tmp_dir / rel).read_bytes()
            if target.is_file() and target.read_bytes() == data:
                continue
            if apply:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                out.append(f"wrote: {_show(target)}")
            else:
                out.append(f"{'differs' if target.is_file() else 'missing'}: {_show(target)}")
        for rel in sorted(_committed() - set(generated)):
            if apply:
                (OUT_ROOT / rel).unlink()
            out.append(f"{'removed' if apply else 'stale'}: {_show(OUT_ROOT / rel)}")
        for rel in _package_dirs(generated):
            init = OUT_ROOT / rel / "__init__.py"
            if not init.is_file():
                if apply:
                    init.write_text("")
                out.append(f"{'wrote' if apply else 'missing'}: {_show(init)}")
    return out


def check() -> list[str]:
    """Regenerate into a temporary directory; return a list of problems."""
    return _sync(apply=False)


def write() -> list[str]:
    """Regenerate in place; return the list of changed paths."""
    return _sync(apply=True)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 when the committed generated code is out of date",
    )
    args = parser.parse_args(argv)
    try:
        lines = check() if args.check else write()
    except GenerationError as exc:
        print(f"gen_protos: {exc}", file=sys.stderr)
        return 2
    for line in lines:
        print(line)
    if args.check and lines:
        print(
            "gen_protos: generated code is out of date; run `uv run python tools/gen_protos.py`",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
