"""Regenerates the Python code of every .proto under proto/ (and checks it is up to date).

    python proto/generate.py          # rewrite *_pb2.py, *_pb2.pyi, *_pb2_grpc.py(i)
    python proto/generate.py --check  # exit 1 if the committed code differs

The generated modules sit next to their .proto files and are installed as `zapgate.v1`
(see pyproject.toml), so the imports protoc writes (`from zapgate.v1 import ...`) resolve.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(out_dir: Path) -> None:
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    scripts = Path(sys.executable).parent  # mypy-protobuf's plugins live beside python
    for proto in proto_files():
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--plugin=protoc-gen-mypy={scripts / 'protoc-gen-mypy'}",
            f"--plugin=protoc-gen-mypy_grpc={scripts / 'protoc-gen-mypy_grpc'}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            f"--mypy_out={out_dir}",
            f"--mypy_grpc_out={out_dir}",
            str(proto.relative_to(PROTO_ROOT)),
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {proto}")


def generated_files(root: Path) -> set[Path]:
    return {
        path.relative_to(root)
        for path in root.rglob("*")
        if path.is_file() and path.name.endswith(GENERATED_SUFFIXES)
    }


def drift(fresh: Path) -> list[str]:
    committed, expected = generated_files(PROTO_ROOT), generated_files(fresh)
    problems = [f"stale generated file: {p}" for p in sorted(committed - expected)]
    problems += [f"missing generated file: {p}" for p in sorted(expected - committed)]
    problems += [
        f"out of date: {p}"
        for p in sorted(committed & expected)
        if not filecmp.cmp(PROTO_ROOT / p, fresh / p, shallow=False)
    ]
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if generated code drifted")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        if args.check:
            problems = drift(fresh)
            for problem in problems:
                print(problem, file=sys.stderr)
            if problems:
                print("Generated code drifted: run `python proto/generate.py`.", file=sys.stderr)
            return 1 if problems else 0
        for stale in generated_files(PROTO_ROOT) - generated_files(fresh):
            (PROTO_ROOT / stale).unlink()
        for path in generated_files(fresh):
            (PROTO_ROOT / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fresh / path, PROTO_ROOT / path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
