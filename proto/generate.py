"""Regenerates the code of every .proto under proto/ and every client (and checks it).

    python proto/generate.py          # rewrite all generated files
    python proto/generate.py --check  # exit 1 if the committed code differs

Three outputs, all committed:

- proto/: the server's Python code, next to the .proto files and installed as `zapgate.v1`
  and `zapgate.engine.v1` (see pyproject.toml), so protoc's imports (`from zapgate.v1 import
  ...`) resolve. For the public API it includes connect-python's `*_connect.py` (the Connect,
  gRPC-Web and gRPC-over-HTTP applications the HTTP port serves, gateway/http/).
- clients/python/zapgate_client/v1/: the same Python code for the public API with its imports
  pointing at `zapgate_client.v1`, so the client installs on its own (clients/python/README.md).
- clients/typescript/src/gen/: TypeScript from protoc-gen-es (pinned by
  clients/typescript/package-lock.json; installed there with `npm ci` when missing).
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
REPO = PROTO_ROOT.parent
PUBLIC_API = PROTO_ROOT / "zapgate" / "v1"
PYTHON_CLIENT = REPO / "clients" / "python" / "zapgate_client"
TYPESCRIPT_CLIENT = REPO / "clients" / "typescript"
PYTHON_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
CONNECT_SUFFIXES = ("_connect.py",)
# The only module paths protoc and mypy-protobuf write into the code (never inside the
# serialized descriptors, whose file names and packages stay `zapgate/v1`, `zapgate.v1`).
CLIENT_IMPORTS = [
    (re.compile(r"^from zapgate\.v1 import ", re.MULTILINE), "from zapgate_client.v1 import "),
    (re.compile(r"\(DESCRIPTOR, 'zapgate\.v1\."), "(DESCRIPTOR, 'zapgate_client.v1."),
]


@dataclass(frozen=True)
class Output:
    """Generated files under `committed`, made afresh under `fresh_dir` of the temp dir."""

    committed: Path
    fresh_dir: str
    suffixes: tuple[str, ...]


OUTPUTS = [
    Output(PROTO_ROOT, "server", PYTHON_SUFFIXES + CONNECT_SUFFIXES),
    Output(PYTHON_CLIENT, "python-client", PYTHON_SUFFIXES),
    Output(TYPESCRIPT_CLIENT / "src" / "gen", "typescript-client", ("_pb.ts",)),
]


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def protoc_run(protos: list[Path], *plugin_args: str) -> None:
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", *plugin_args]
    if protoc.main([*args, *(str(p.relative_to(PROTO_ROOT)) for p in protos)]) != 0:
        raise SystemExit(f"protoc failed on {', '.join(p.name for p in protos)}")


def generate_python(out_dir: Path) -> None:
    scripts = Path(sys.executable).parent  # mypy-protobuf's plugins live beside python
    for proto in proto_files():
        protoc_run(
            [proto],
            f"--plugin=protoc-gen-mypy={scripts / 'protoc-gen-mypy'}",
            f"--plugin=protoc-gen-mypy_grpc={scripts / 'protoc-gen-mypy_grpc'}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            f"--mypy_out={out_dir}",
            f"--mypy_grpc_out={out_dir}",
        )


def generate_connect(out_dir: Path) -> None:
    """connect-python's applications for the public API (the server's HTTP port only: the
    Python client stays gRPC and needs no Connect runtime)."""
    plugin = Path(sys.executable).parent / "protoc-gen-connect-python"
    protoc_run(
        sorted(PUBLIC_API.glob("*.proto")),
        f"--plugin=protoc-gen-connect-python={plugin}",
        f"--connect-python_out={out_dir}",
    )


def derive_python_client(server_dir: Path, out_dir: Path) -> None:
    """The public API's server code, re-pointed at the client package's `v1`."""
    for source in generated_files(server_dir / "zapgate" / "v1", PYTHON_SUFFIXES):
        text = (server_dir / "zapgate" / "v1" / source).read_text()
        for pattern, replacement in CLIENT_IMPORTS:
            text = pattern.sub(replacement, text)
        (out_dir / "v1").mkdir(parents=True, exist_ok=True)
        (out_dir / "v1" / source).write_text(text)


def generate_typescript(out_dir: Path) -> None:
    plugin = TYPESCRIPT_CLIENT / "node_modules" / ".bin" / "protoc-gen-es"
    if not plugin.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit("the TypeScript client is generated with protoc-gen-es: install npm")
        print("installing the TypeScript client's packages: npm ci", file=sys.stderr)
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=TYPESCRIPT_CLIENT, check=True)  # noqa: S603
    out_dir.mkdir(parents=True)
    protoc_run(
        sorted(PUBLIC_API.glob("*.proto")),
        f"--plugin=protoc-gen-es={plugin}",
        f"--es_out={out_dir}",
        "--es_opt=target=ts,import_extension=js",
    )


def generate(tmp: Path) -> None:
    server = tmp / "server"
    server.mkdir()
    generate_python(server)
    generate_connect(server)
    derive_python_client(server, tmp / "python-client")
    generate_typescript(tmp / "typescript-client")


def generated_files(root: Path, suffixes: tuple[str, ...]) -> set[Path]:
    if not root.exists():
        return set()
    return {
        path.relative_to(root)
        for path in root.rglob("*")
        if path.is_file() and path.name.endswith(suffixes) and "node_modules" not in path.parts
    }


def drift(output: Output, fresh: Path) -> list[str]:
    committed = generated_files(output.committed, output.suffixes)
    expected = generated_files(fresh, output.suffixes)
    where = output.committed.relative_to(REPO)
    problems = [f"stale generated file: {where / p}" for p in sorted(committed - expected)]
    problems += [f"missing generated file: {where / p}" for p in sorted(expected - committed)]
    problems += [
        f"out of date: {where / p}"
        for p in sorted(committed & expected)
        if not filecmp.cmp(output.committed / p, fresh / p, shallow=False)
    ]
    return problems


def update(output: Output, fresh: Path) -> None:
    fresh_files = generated_files(fresh, output.suffixes)
    for stale in generated_files(output.committed, output.suffixes) - fresh_files:
        (output.committed / stale).unlink()
    for path in fresh_files:
        (output.committed / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fresh / path, output.committed / path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if generated code drifted")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        if not args.check:
            for output in OUTPUTS:
                update(output, Path(tmp) / output.fresh_dir)
            return 0
        problems = [p for o in OUTPUTS for p in drift(o, Path(tmp) / o.fresh_dir)]
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("Generated code drifted: run `python proto/generate.py`.", file=sys.stderr)
        return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
