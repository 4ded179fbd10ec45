"""The committed generated modules are exactly what grpcio-tools produces now."""

from __future__ import annotations

from pathlib import Path

from proto import generate


def test_committed_generated_modules_match_a_fresh_generation(tmp_path: Path):
    generate.generate(tmp_path)
    fresh = sorted(p.name for p in (tmp_path / "proto").iterdir())
    assert fresh == [
        "admin_pb2.py",
        "admin_pb2.pyi",
        "admin_pb2_grpc.py",
        "distribution_pb2.py",
        "distribution_pb2.pyi",
        "distribution_pb2_grpc.py",
    ]
    stale = [
        name
        for name in fresh
        if (tmp_path / "proto" / name).read_bytes() != (generate.PROTO_DIR / name).read_bytes()
    ]
    assert stale == [], f"regenerate with `python -m proto.generate`: {stale} differ"
