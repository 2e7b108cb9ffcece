"""Generate the Python code for protos/stad/v1/*.proto next to the .proto files.

The proto path mirrors the import path: protos/stad/v1/scoring.proto becomes
the module stad.v1.scoring_pb2.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"


def generate() -> None:
    from grpc_tools import protoc  # imported here: only the build needs it

    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "stad" / "v1").glob("*.proto"))
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{Path(protoc.__file__).parent / '_proto'}"]
    args += [f"--python_out={PROTO_ROOT}", f"--grpc_python_out={PROTO_ROOT}"]
    mypy_plugin = shutil.which("protoc-gen-mypy") or _beside_python("protoc-gen-mypy")
    mypy_grpc_plugin = shutil.which("protoc-gen-mypy_grpc") or _beside_python("protoc-gen-mypy_grpc")
    if mypy_plugin and mypy_grpc_plugin:
        args += [
            f"--plugin=protoc-gen-mypy={mypy_plugin}",
            f"--plugin=protoc-gen-mypy_grpc={mypy_grpc_plugin}",
            f"--mypy_out=quiet:{PROTO_ROOT}",
            f"--mypy_grpc_out=quiet:{PROTO_ROOT}",
        ]
    if protoc.main(args + sources) != 0:
        raise RuntimeError(f"protoc failed on {sources}")


def _beside_python(name: str) -> str | None:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else None


if __name__ == "__main__":
    generate()
