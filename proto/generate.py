"""Regenerate the committed Python modules from the .proto files.

Run from anywhere: ``python -m proto.generate [OUTDIR]``. Compiling with the
repository root on the include path makes the generated gRPC modules import
``from proto import admin_pb2``, so they work as a package.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
ROOT = PROTO_DIR.parent
PROTO_FILES = ("admin.proto", "distribution.proto")


def generate(out_dir: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in PROTO_FILES:
        args = [
            "grpc_tools.protoc",
            f"-I{ROOT}",
            f"-I{well_known}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            f"proto/{name}",
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed for proto/{name}")


def main() -> None:
    # protoc writes into OUTDIR/proto/, mirroring the include-relative path.
    out_root = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    generate(out_root)


if __name__ == "__main__":
    main()
