#!/usr/bin/env python3
"""The dependency rules of lib/ (DESIGN section 2), checked over #include lines.

  check_layering.py [ROOT]          # ROOT: a checkout (default: this one); exit 1 on a violation
  check_layering.py --self-test     # plants violations in a copy and checks each is caught

Rules:
  1. lib/moe includes nothing from parallel/ or train/, and no MPI or NCCL header.
  2. Only lib/parallel includes MPI or NCCL headers.
  3. Nothing under lib/ includes train/ except lib/train (apps/ may).
  4. The CMake links agree: a file in lib/X may include "Y/..." only when X's library links Y's
     (directly or through another library), read from the moe_library() calls in CMakeLists.txt.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)
MPI_HEADERS = re.compile(r'^(mpi\.h|mpi-ext\.h|mpi_portable_platform\.h|nccl\.h|nccl_net\.h)$')


def library_links(root):
    """folder -> set of folders its library links directly, from moe_library(target folder deps...)."""
    text = open(os.path.join(root, "CMakeLists.txt")).read()
    calls = re.findall(r'moe_library\(\s*(\w+)\s+(\w+)([^)]*)\)', text, re.S)
    folder_of = {target: folder for target, folder, _ in calls}
    links = {}
    for target, folder, deps in calls:
        links[folder] = {folder_of[d] for d in deps.split() if d in folder_of}
    return links


def closure(links):
    reach = {}
    for start in links:
        seen, todo = set(), [start]
        while todo:
            for nxt in links.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        reach[start] = seen | {start}
    return reach


def sources(root):
    for top in ("lib", "apps"):
        for dirpath, _, files in os.walk(os.path.join(root, top)):
            for f in sorted(files):
                if f.endswith((".h", ".cpp", ".h.in")):
                    path = os.path.join(dirpath, f)
                    yield os.path.relpath(path, root), open(path, errors="replace").read()


def violations(root):
    links = library_links(root)
    reach = closure(links)
    found = []
    for rel, text in sources(root):
        parts = rel.split(os.sep)
        in_lib = parts[0] == "lib"
        folder = parts[1] if in_lib else None
        for m in INCLUDE.finditer(text):
            kind, header = m.group(1), m.group(2)
            line = text.count("\n", 0, m.start()) + 1
            where = f"{rel}:{line}: #include {kind}{header}{'>' if kind == '<' else kind}"
            first = header.split("/")[0]
            if kind == "<" and MPI_HEADERS.match(os.path.basename(header)) and in_lib and folder != "parallel":
                found.append(f"{where}: only lib/parallel may include MPI or NCCL headers")
            if kind != '"' or "/" not in header:
                continue
            if in_lib and folder == "moe" and first in ("parallel", "train"):
                found.append(f"{where}: lib/moe is the model alone (no parallel/, no train/)")
            elif in_lib and first == "train" and folder != "train":
                found.append(f"{where}: only lib/train and apps/ may include train/")
            elif in_lib and first in links and folder in reach and first not in reach[folder]:
                found.append(f"{where}: lib/{folder} does not link lib/{first} in CMakeLists.txt "
                             f"(it links {', '.join(sorted(reach[folder] - {folder})) or 'nothing'})")
    return found


def self_test(root):
    """Each planted violation must be reported; the untouched copy must pass."""
    plants = [
        ("lib/moe/router.cpp", '#include "parallel/communicator.h"\n', "lib/moe is the model alone"),
        ("lib/moe/router.cpp", '#include <mpi.h>\n', "only lib/parallel may include MPI"),
        ("lib/checkpoint/checkpoint.cpp", '#include <nccl.h>\n', "only lib/parallel may include MPI"),
        ("lib/record/run_record.cpp", '#include "train/trainer.h"\n', "only lib/train and apps/"),
        ("lib/data/data_source.cpp", '#include "checkpoint/checkpoint.h"\n', "does not link lib/checkpoint"),
    ]
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, "tree")
        os.makedirs(copy)
        shutil.copy(os.path.join(root, "CMakeLists.txt"), copy)
        for top in ("lib", "apps"):
            shutil.copytree(os.path.join(root, top), os.path.join(copy, top))
        if violations(copy):
            failures.append("the unmodified copy already reports violations")
        for rel, line, expected in plants:
            path = os.path.join(copy, rel)
            original = open(path).read()
            open(path, "w").write(line + original)
            found = violations(copy)
            if not any(expected in v and rel in v for v in found):
                failures.append(f"planting {line.strip()} in {rel} was not reported as '{expected}': {found}")
            else:
                print(f"caught: {rel}: {line.strip()} -> {[v for v in found if rel in v][0]}")
            open(path, "w").write(original)
    return failures


def main():
    args = sys.argv[1:]
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
    if args and args[0] == "--self-test":
        failures = self_test(root)
        for f in failures:
            print(f"FAIL: {f}")
        print(f"layering self-test: {'failed' if failures else 'every planted violation caught'}")
        return 1 if failures else 0
    if args:
        root = os.path.abspath(args[0])
    found = violations(root)
    for v in found:
        print(v)
    print(f"layering: {len(found)} violation(s) in {sum(1 for _ in sources(root))} files")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
