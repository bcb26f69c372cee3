"""Generate the Python gRPC stubs (with mypy stubs) next to the .proto files, in llamagate/v1/.

Run by `make proto` and by the llamagate-contract build (proto/setup.py), so generated code is
never committed or edited by hand.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent


def generate(out_dir: Path = PROTO_DIR) -> None:
    import grpc_tools
    from grpc_tools import protoc  # imported late: only a build-time dependency

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    # mypy-protobuf's plugins: next to this interpreter (a virtualenv need not be activated), else
    # on PATH (an isolated build puts its tools there).
    bindir = Path(sys.executable).parent
    plugin = {
        name: str(bindir / name) if (bindir / name).exists() else shutil.which(name) or name
        for name in ("protoc-gen-mypy", "protoc-gen-mypy_grpc")
    }
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / "llamagate").rglob("*.proto"))
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={plugin['protoc-gen-mypy']}",
        f"--plugin=protoc-gen-mypy_grpc={plugin['protoc-gen-mypy_grpc']}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed for {protos}")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else PROTO_DIR)
