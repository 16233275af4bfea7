#!/usr/bin/env python3
"""Generates sluice's view of the CUDA driver ABI from the toolkit's headers.

Inputs:
  * cuda.h, cudaProfiler.h and the graphics interop headers cudaGL.h, cudaEGL.h and cudaVDPAU.h,
    preprocessed with __CUDA_API_VERSION_INTERNAL so that every exported variant (cuMemAlloc and
    cuMemAlloc_v2, cuLaunchKernel and cuLaunchKernel_ptsz, ...) is declared under its literal symbol
    name. The interop headers include OpenGL, EGL and VDPAU headers: shim/interop_types/ stands in
    for them (--standin-include);
  * the matching *Typedefs.h headers, whose PFN_<name>_v<version>[_ptsz|_ptds] typedefs list every
    (name, ABI version, per-thread) triple that cuGetProcAddress answers;
  * api_policy.txt, the one small table of what sluice handles itself.

Outputs (into --out):
  * driver_symbols.inc: one X-macro line per exported symbol:
        SLUICE_SYM(name, TREATMENT, stream_arg, (params), (args))
  * proc_table.inc: one X-macro line per cuGetProcAddress answer:
        SLUICE_PROC("base", version, per_thread, symbol)
  * driver_symbols.txt: the exported names, one per line (for the linker version script test).
  * queued_ops.inc: one X-macro line per `queue:<kind>` entry of api_policy.txt, for the shim's
    generated hooks of stream-ordered calls whose arguments are plain values:
        SLUICE_QUEUED(name, kind, abi, stream_arg, bytes_expr, (params), (args))
  * libsluice.map: the linker version script that exports exactly the driver's names.

Nothing here is a hand-kept list of the driver's functions: a new toolkit regenerates everything.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

TREATMENTS = {"hook", "sync", "meta", "unmanaged", "ordered", "queue"}
OP_KINDS = {"kernel", "copy", "memset", "event_record", "event_wait", "host_fn", "mem_op", "mem_free",
            "graph", "prefetch"}
DECL_RE = re.compile(r"\bCUresult\s+(cu[A-Za-z0-9_]+)\s*\(([^;]*?)\)\s*;")
PFN_RE = re.compile(r"\bPFN_(cu[A-Za-z0-9_]+?)_v(\d+)(_ptsz|_ptds)?\)\s*\(")
ALIAS_RE = re.compile(r"^\s*#\s*define\s+(cu[A-Za-z0-9_]+)\s+(?:__CUDA_API_PT(?:DS|SZ)\()?(cu[A-Za-z0-9_]+)\)?\s*$")


def fail(message: str) -> None:
    print(f"gen_driver_api.py: error: {message}", file=sys.stderr)
    sys.exit(1)


# The driver headers sluice generates from, with the typedef header of each. Everything a driver
# library exports is declared in one of them.
HEADERS = (("cuda.h", "cudaTypedefs.h"), ("cudaProfiler.h", "cudaProfilerTypedefs.h"),
           ("cudaGL.h", "cudaGLTypedefs.h"), ("cudaEGL.h", "cudaEGLTypedefs.h"),
           ("cudaVDPAU.h", "cudaVDPAUTypedefs.h"))


def preprocess(cc: str, source: str, includes: list[Path], defines: list[str]) -> str:
    """Preprocesses C `source` (given on stdin) with the include directories in order."""
    cmd = [cc, "-E", "-P", "-x", "c", *[f"-I{i}" for i in includes], *[f"-D{d}" for d in defines], "-"]
    try:
        return subprocess.run(cmd, input=source, check=True, capture_output=True, text=True).stdout
    except subprocess.CalledProcessError as err:
        fail(f"preprocessing the driver headers failed: {err.stderr.strip()}")
    return ""


def split_params(params: str) -> list[str]:
    parts, depth, current = [], 0, []
    for ch in params:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    tail = "".join(current).strip()
    if tail:
        parts.append(tail)
    return parts


def parse_declarations(text: str) -> dict[str, list[tuple[str, str]]]:
    """Returns {symbol: [(type, name), ...]} for every `CUresult cuX(...);` declaration."""
    flat = " ".join(text.split())
    decls: dict[str, list[tuple[str, str]]] = {}
    for match in DECL_RE.finditer(flat):
        name, params = match.group(1), match.group(2).strip()
        typed: list[tuple[str, str]] = []
        if params not in ("", "void"):
            for index, param in enumerate(split_params(params)):
                words = re.match(r"^(.*?)([A-Za-z_][A-Za-z0-9_]*)$", param)
                if words is None or not words.group(1).strip() or words.group(2) in ("int", "char", "void"):
                    typed.append((param, f"a{index}"))  # unnamed parameter
                else:
                    typed.append((words.group(1).strip(), words.group(2)))
        previous = decls.get(name)
        if previous is not None and [t for t, _ in previous] != [t for t, _ in typed]:
            fail(f"{name} is declared twice with different parameter types")
        decls[name] = typed
    return decls


def parse_policy(path: Path, symbols: dict) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """Returns ({symbol: treatment}, {symbol: op kind of a `queue:<kind>` entry}, problems)."""
    treatment_of: dict[str, str] = {}
    kind_of: dict[str, str] = {}
    problems: list[str] = []
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        treatment, names = words[0], words[1:]
        kind = None
        if treatment.startswith("queue:"):
            treatment, kind = "queue", treatment[len("queue:"):]
            if kind not in OP_KINDS:
                problems.append(f"{path}:{lineno}: unknown operation kind '{kind}'")
                continue
        if treatment not in TREATMENTS:
            problems.append(f"{path}:{lineno}: unknown treatment '{treatment}'")
            continue
        for name in names:
            if name.startswith("re:"):
                pattern = re.compile(name[3:])
                matched = [s for s in symbols if pattern.fullmatch(s)]
                if not matched:
                    problems.append(f"{path}:{lineno}: pattern '{name}' matches no symbol")
                targets = matched
            else:
                if name not in symbols:
                    problems.append(f"{path}:{lineno}: '{name}' is not a symbol of this cuda.h")
                    continue
                targets = [name]
            for target in targets:
                if target in treatment_of and treatment_of[target] != treatment:
                    problems.append(f"{path}:{lineno}: '{target}' is already '{treatment_of[target]}'")
                treatment_of[target] = treatment
                if kind is not None:
                    kind_of[target] = kind
    return treatment_of, kind_of, problems


def stream_argument(params: list[tuple[str, str]]) -> str | None:
    for type_, name in params:
        if type_ == "CUstream":
            return name
    return None


def payload_bytes(name: str, params: list[tuple[str, str]]) -> str:
    """A C++ expression for the bytes a queued call moves or sets, from cuda.h's parameter names."""
    names = {n for _, n in params}
    element = {"D8": 1, "D16": 2, "D32": 4}
    width = next((w for tag, w in element.items() if re.search(tag + r"(Async|_)", name)), 1)
    if "ByteCount" in names:
        return "ByteCount"
    if {"Width", "Height"} <= names:
        return f"Width * Height * {width}"
    if "N" in names:
        return f"N * {width}"
    if "count" in names and "Prefetch" in name:
        return "count"
    return "0"


def parse_pfn_versions(texts: list[str]) -> dict[str, dict[int, set[str]]]:
    """{base: {version: {"", "_ptsz", "_ptds"}}} from the PFN typedefs."""
    versions: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    for text in texts:
        for match in PFN_RE.finditer(text):
            versions[match.group(1)][int(match.group(2))].add(match.group(3) or "")
    return versions


def parse_aliases(text: str) -> dict[str, str]:
    aliases = {}
    for line in text.splitlines():
        match = ALIAS_RE.match(line)
        if match and match.group(1) != match.group(2):
            aliases.setdefault(match.group(1), match.group(2))
    return aliases


def resolve_proc_table(versions, symbols, aliases) -> tuple[list[tuple[str, int, int, str]], list[str]]:
    """Maps every PFN (base, version, per-thread) to the exported symbol that implements it.

    The n-th ABI version of a function is exported as base, base_v2, base_v3, ... in version order.
    Per-thread variants carry their own version (the one that introduced per-thread streams) and
    append _ptsz (stream functions) or _ptds (synchronous copies) to the newest plain variant that is
    not newer than them. Where the ordinal name does not exist, cuda.h's own #define for the newest
    version says which symbol it is (cuGraphInstantiate -> cuGraphInstantiateWithFlags).
    """
    rows, problems = [], []
    for base in sorted(versions):
        if base.startswith("cuWGL"):  # Windows only: declared under _WIN32, never exported here
            continue
        plain = sorted(v for v, suffixes in versions[base].items() if "" in suffixes)
        plain_symbol = {}
        for ordinal, version in enumerate(plain, 1):
            symbol = base if ordinal == 1 else f"{base}_v{ordinal}"
            if symbol not in symbols and ordinal == len(plain) and base in aliases:
                symbol = aliases[base]
            plain_symbol[version] = symbol
            if symbol not in symbols:
                problems.append(f"PFN_{base}_v{version}: no exported symbol '{symbol}'")
                continue
            rows.append((base, version, 0, symbol))
        for version in sorted(versions[base]):
            for suffix in sorted(s for s in versions[base][version] if s):
                older = [v for v in plain if v <= version] or plain[:1]
                stem = plain_symbol[older[-1]] if older else base
                symbol = stem + suffix
                if symbol not in symbols:
                    problems.append(f"PFN_{base}_v{version}{suffix}: no exported symbol '{symbol}'")
                    continue
                rows.append((base, version, 1, symbol))
    rows.sort(key=lambda row: (row[0], row[1], row[2]))
    return rows, problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cc", required=True, help="C compiler used as the preprocessor")
    parser.add_argument("--cuda-include", required=True, type=Path)
    parser.add_argument("--standin-include", required=True, type=Path,
                        help="stand-ins for the OpenGL, EGL and VDPAU headers (shim/interop_types)")
    parser.add_argument("--policy", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()

    include = args.cuda_include
    defines = ["__CUDA_API_VERSION_INTERNAL", "CUDA_ENABLE_DEPRECATED"]
    # vdpau.h first: cudaVDPAU.h names its types without including it.
    source = "#include <vdpau/vdpau.h>\n" + "".join(f"#include <{h}>\n" for h, _ in HEADERS)
    symbols = parse_declarations(preprocess(args.cc, source, [args.standin_include, include], defines))
    if len(symbols) < 400:
        fail(f"only {len(symbols)} driver functions found in {include}/cuda.h; is this a CUDA toolkit?")

    treatment_of, kind_of, problems = parse_policy(args.policy, symbols)
    for name in kind_of:
        if stream_argument(symbols[name]) is None:
            problems.append(f"'{name}' is queued but has no CUstream parameter")
    if problems:
        fail("\n  ".join(["api_policy.txt is inconsistent with cuda.h:"] + problems))

    versions = parse_pfn_versions([(include / t).read_text() for _, t in HEADERS])
    aliases = {}
    for header, _ in reversed(HEADERS):  # cuda.h's own names win
        aliases.update(parse_aliases((include / header).read_text()))
    proc_rows, proc_problems = resolve_proc_table(versions, symbols, aliases)
    for problem in proc_problems:  # a header quirk, not fatal: the name stays unresolvable
        print(f"gen_driver_api.py: note: {problem}", file=sys.stderr)

    defaulted = []
    lines = []
    queued = []
    for name in sorted(symbols):
        params = symbols[name]
        stream = stream_argument(params)
        treatment = treatment_of.get(name)
        if treatment is None:
            if stream is not None:
                treatment = "unmanaged"  # stream-ordered work sluice does not queue: drained and counted
                defaulted.append(name)
            else:
                treatment = "forward"
        param_text = ", ".join(f"{t} {n}" for t, n in params) if params else "void"
        arg_text = ", ".join(n for _, n in params)
        if treatment == "queue":
            abi = "per_thread" if name.endswith(("_ptsz", "_ptds")) else "legacy"
            queued.append(f"SLUICE_QUEUED({name}, {kind_of[name]}, {abi}, {stream}, "
                          f"{payload_bytes(name, params)}, ({param_text}), ({arg_text}))")
        lines.append(f"SLUICE_SYM({name}, {treatment.upper()}, {stream or 'none'}, ({param_text}), ({arg_text}))")

    args.out.mkdir(parents=True, exist_ok=True)
    header = "// Generated by shim/gen/gen_driver_api.py from the CUDA toolkit headers. Do not edit.\n"
    (args.out / "driver_symbols.inc").write_text(header + "\n".join(lines) + "\n")
    proc_lines = [f'SLUICE_PROC("{b}", {v}, {p}, {s})' for b, v, p, s in proc_rows]
    (args.out / "proc_table.inc").write_text(header + "\n".join(proc_lines) + "\n")
    (args.out / "driver_symbols.txt").write_text("\n".join(sorted(symbols)) + "\n")
    (args.out / "unmanaged_by_default.txt").write_text("\n".join(defaulted) + "\n")
    (args.out / "queued_ops.inc").write_text(header + "\n".join(queued) + "\n")
    exported = "".join(f"    {name};\n" for name in sorted(symbols))
    (args.out / "libsluice.map").write_text(
        "/* Generated by shim/gen/gen_driver_api.py: libsluice.so exports the driver ABI and nothing else. */\n"
        f"{{\n  global:\n{exported}  local:\n    *;\n}};\n")


if __name__ == "__main__":
    main()
