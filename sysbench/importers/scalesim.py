"""SCALE-Sim inputs -> suite pieces: topology CSVs (conv and GEMM forms) and .cfg files.

SCALE-Sim's semantics are kept exactly (scalesim/topology_utils.py and scale_config.py of
SCALE-Sim v3.0.0):
- conv rows: no padding, one stride for both axes, batch 1, ofmap = ceil((H - F + S) / S).
  Where (H - F) is not a multiple of S that formula reads S - (H - F) % S rows past the
  IFMAP edge; sysbench (PyTorch's formula) gets the same ofmap from an IFMAP widened to
  (ofmap - 1) * S + F, which is what the imported case says.
- a layer whose name contains "DP" is depthwise: SCALE-Sim runs it as Channels layers of one
  channel and Num Filter filters each (named NAMEChannel_i). It maps to conv2d with
  groups = Channels, out_channels = Channels * Num Filter: each group is one of SCALE-Sim's
  layers, the same GEMM, so each group's cycles are SCALE-Sim's + 1 (models/systolic.py) and
  the layer's cycles are the sum over its channels + Channels.
- GEMM rows are "Layer, M, N, K": ifmap M x K, filter K x N (K the reduction).
- the optional last column "N:M" only matters with [sparsity] SparsitySupport = true: such
  a layer maps to sparse_gemm (sysbench's N:M model, not SCALE-Sim's sparse mapping).
Leniency beyond SCALE-Sim (which needs every row to end in a comma, reads no tabs and no
extra columns): a BOM, tab separators, blank rows, missing trailing commas and extra named
columns (listed, then ignored) are accepted; anything else is refused with file:line.
"""
from __future__ import annotations

import configparser
import re
from pathlib import Path

from ..suite import SuiteError

CONV_FIELDS = ("IFMAP Height", "IFMAP Width", "Filter Height", "Filter Width", "Channels",
               "Num Filter", "Strides")
GEMM_FIELDS = ("M", "N", "K")


def _read_text(path: Path, what: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SuiteError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    try:
        if b"\0" in data:
            raise UnicodeDecodeError("utf-8", data, 0, 1, "NUL byte")
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SuiteError([f"{path}: not a text file ({what} expected)"]) from None


def _split(line: str, delimiter: str) -> list[str]:
    cells = [c.strip() for c in line.split(delimiter)]
    for index, cell in enumerate(cells):
        if cell.startswith("#"):  # a comment (SCALE-Sim drops what follows the last comma)
            del cells[index:]
            break
    while cells and not cells[-1]:
        cells.pop()
    return cells


def _positive_int(value: str, where: str, column: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise SuiteError([f"{where}: {column} must be a positive integer, got {value!r}"])
    return number


def _sparsity(value: str, where: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)\s*:\s*(\d+)", value)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise SuiteError([f"{where}: sparsity must be N:M with 1 <= N <= M, got {value!r}"])
    return int(match[1]), int(match[2])


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def read_topology(path: Path, sparsity_support: bool = False, batch: int = 1) -> tuple[list[dict], list[str], str]:
    """(cases, notes, form) of a SCALE-Sim topology CSV; form is "conv" or "gemm"."""
    lines = _read_text(path, "a SCALE-Sim topology CSV").splitlines()
    if not lines or not lines[0].strip():
        raise SuiteError([f"{path}:1: no header (a SCALE-Sim topology starts with its column names)"])
    delimiter = "," if "," in lines[0] else "\t"
    header = _split(lines[0], delimiter)
    names = [" ".join(c.lower().split()) for c in header]
    if names[1:4] == ["m", "n", "k"]:
        form, fields = "gemm", GEMM_FIELDS
    elif len(names) >= 8 and names[1].startswith("ifmap") and "filter" in names[3] and "stride" in names[7]:
        form, fields = "conv", CONV_FIELDS
    else:
        raise SuiteError([f"{path}:1: not a SCALE-Sim topology: the header is neither the conv form "
                          f"({', '.join(('Layer name',) + CONV_FIELDS)}) nor the GEMM form (Layer, M, N, K)"])
    fixed = 1 + len(fields)
    ignored = sorted({header[i] for i in range(fixed, len(header)) if names[i] and "sparsity" not in names[i]})

    cases, notes, widened, seen, unused_nm, titles = [], [], [], {}, [], []
    for lineno, line in enumerate(lines[1:], start=2):
        cells = _split(line, delimiter)
        if not cells:
            continue
        where = f"{path}:{lineno}"
        if len(cells) == 1:  # a name alone: a title between the networks of one file
            titles.append(f"{cells[0]!r} (line {lineno})")
            continue
        if len(cells) < fixed:
            raise SuiteError([f"{where}: expected {fixed} values (Layer, {', '.join(fields)}), got {len(cells)}"])
        name = cells[0]
        if not name:
            raise SuiteError([f"{where}: the layer has no name"])
        values = [_positive_int(v, where, col) for v, col in zip(cells[1:fixed], fields)]
        nm = (1, 1)
        for index in range(fixed, len(cells)):
            value, column = cells[index], names[index] if index < len(names) else ""
            if not value or (column and "sparsity" not in column):
                continue  # empty, or under a named column listed as ignored
            if column or ":" in value:
                nm = _sparsity(value, where)
            else:
                raise SuiteError([f"{where}: unexpected value {value!r} in column {index + 1}, which has no "
                                  "header (SCALE-Sim reads an extra last column as N:M sparsity)"])
        case_name = name if name not in seen else f"{name}_{seen[name] + 1}"
        seen[name] = seen.get(name, 0) + 1
        if case_name != name:
            notes.append(f"{where}: layer name {name!r} repeats: its case is {case_name!r}")
        sparse = sparsity_support and nm[0] < nm[1]
        if nm[0] < nm[1] and not sparsity_support:
            unused_nm.append(case_name)
        if form == "gemm":
            m, n, k = values
            case = {"name": case_name, "kind": "gemm", "m": m, "k": k, "n": n}
            if sparse:
                case = {"name": case_name, "kind": "sparse_gemm", "m": m, "k": k, "n": n,
                        "nm": f"{nm[0]}:{nm[1]}", "pattern": "nm"}
        else:
            case = _conv_case(case_name, values, nm if sparse else None, batch, where, widened, notes)
        cases.append(case)
    if not cases:
        raise SuiteError([f"{path}: no layers under the header"])
    if widened:
        notes.append(f"SCALE-Sim's ofmap ceil((H - F + S) / S) reads past the IFMAP edge on {len(widened)} "
                     f"layer(s) ({', '.join(widened)}): their height/width are widened to (ofmap - 1) * S + F")
    if titles:
        notes.append(f"{path}: rows with a name and no values skipped as titles: {', '.join(titles)}")
    if unused_nm:
        notes.append(f"N:M sparsity of {len(unused_nm)} layer(s) ({', '.join(unused_nm)}) not used: SparsitySupport "
                     "is false (SCALE-Sim's default; give a .cfg with [sparsity] SparsitySupport = true)")
    if ignored:
        notes.append(f"{path}: columns ignored (SCALE-Sim does not read them either): {', '.join(ignored)}")
    if batch != 1 and form == "gemm":
        notes.append(f"--batch {batch} not applied: GEMM rows give M explicitly")
    return cases, notes, form


def _conv_case(name: str, values: list[int], nm, batch: int, where: str, widened: list, notes: list) -> dict:
    h, w, fh, fw, channels, filters, stride = values
    if fh > h or fw > w:
        raise SuiteError([f"{where}: the {fh}x{fw} filter is larger than the {h}x{w} IFMAP "
                          "(SCALE-Sim refuses it too)"])
    ho, wo = _ceil_div(h - fh + stride, stride), _ceil_div(w - fw + stride, stride)
    height, width = (ho - 1) * stride + fh, (wo - 1) * stride + fw
    if (height, width) != (h, w):
        widened.append(name)
    if nm is not None:
        if "DP" in name:
            raise SuiteError([f"{where}: a depthwise ('DP') layer with N:M sparsity is not supported"])
        return {"name": name, "kind": "sparse_gemm", "m": batch * ho * wo, "k": fh * fw * channels,
                "n": filters, "nm": f"{nm[0]}:{nm[1]}", "pattern": "nm"}
    case = {"name": name, "kind": "conv2d", "batch": batch, "height": height, "width": width,
            "in_channels": channels, "out_channels": filters, "kernel": fh if fh == fw else [fh, fw],
            "stride": stride, "padding": 0}
    if "DP" in name:
        case["out_channels"] = channels * filters
        case["groups"] = channels
        notes.append(f"{where}: {name!r} is depthwise ('DP' in the name): SCALE-Sim's {channels} layers "
                     f"{name}Channel_0.. of 1 channel and {filters} filter(s) -> conv2d groups = {channels}")
    if batch == 1:
        del case["batch"]
    return case


# --- .cfg ------------------------------------------------------------------------------

# SCALE-Sim v3's scale_config defaults, used (with one note each) for keys a file lacks.
DEFAULTS = {"run_name": "scale_run", "arrayheight": 4, "arraywidth": 4, "ifmapsramszkb": 256,
            "filtersramszkb": 256, "ofmapsramszkb": 128, "dataflow": "ws", "interfacebandwidth": "CALC",
            "sparsitysupport": "false", "ifmapsrambankbandwidth": 10, "filtersrambankbandwidth": 10}
SECTION = {"run_name": "general", "interfacebandwidth": "run_presets", "sparsitysupport": "sparsity",
           "ifmapsrambankbandwidth": "layout", "filtersrambankbandwidth": "layout"}
V1_NAMES = {"ifmapsramsz": "ifmapsramszkb", "filtersramsz": "filtersramszkb", "ofmapsramsz": "ofmapsramszkb"}
UNMODELLED = {  # SCALE-Sim keys (v1, v2, v3) with no sysbench counterpart
    "ifmapoffset", "filteroffset", "ofmapoffset", "readrequestbuffer", "writerequestbuffer", "memorybanks",
    "onchipmemorybanks", "onchipmemorybankports", "ifmapcustomlayout", "filtercustomlayout",
    "ifmapsrambanknum", "ifmapsrambankport", "filtersrambanknum", "filtersrambankport", "sparserep",
    "optimizedmapping", "blocksize", "randomnumbergeneratorseed", "nonzeroelems", "useramulatortrace",
    "topologycsvloc"}


def read_config(path: Path) -> tuple[str, dict, list[str], bool]:
    """(array name, [arrays.*] table, notes, sparsity support) of a SCALE-Sim .cfg."""
    text = _read_text(path, "a SCALE-Sim .cfg (INI)")
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    try:
        parser.read_string(text, source=str(path))
    except configparser.MissingSectionHeaderError as exc:
        raise SuiteError([f"{path}:{exc.lineno}: not a SCALE-Sim .cfg (INI): no [section] header before "
                          f"{exc.line.strip()!r}"]) from None
    except configparser.ParsingError as exc:
        lineno, line = exc.errors[0]
        raise SuiteError([f"{path}:{lineno}: not a SCALE-Sim .cfg (INI): cannot parse {line.strip()!r}"]) from None
    except configparser.Error as exc:
        raise SuiteError([f"{path}: not a SCALE-Sim .cfg (INI): {exc.message.splitlines()[0]}"]) from None
    if not parser.sections():
        raise SuiteError([f"{path}: not a SCALE-Sim .cfg: no [architecture_presets] or other section"])

    found, unmodelled, unknown = {}, [], []
    for section in parser.sections():
        for key, value in parser.items(section):
            canonical = V1_NAMES.get(key, key)
            spelled = _spelling(text, section, key)
            if canonical in DEFAULTS or canonical == "bandwidth":
                found[canonical] = (value.strip().strip('"'), section, spelled)
            elif key in UNMODELLED:
                unmodelled.append(f"{spelled} = {value.strip()}")
            else:
                unknown.append(f"[{section}] {spelled}")

    notes, used = [], set()

    def get(key):
        used.add(key)
        if key in found:
            return found[key]
        section = SECTION.get(key, "architecture_presets")
        notes.append(f"{path}: [{section}] {_display(key)} missing: SCALE-Sim's default {DEFAULTS[key]}")
        return str(DEFAULTS[key]), section, _display(key)

    def bad(key, message):
        value, section, spelled = found[key]
        return SuiteError([f"{path}:{_line_of(text, section, spelled)}: [{section}] {spelled}: {message}, "
                           f"got {value!r}"])

    def number(key, integer):
        value = get(key)[0]
        first = value.split(",")[0].strip()
        try:
            parsed = int(first) if integer else float(first)
        except ValueError:
            parsed = 0
        if parsed <= 0:
            raise bad(key, f"must be a positive {'integer' if integer else 'number'}")
        if not integer and parsed.is_integer():
            parsed = int(parsed)  # 64 reads better than 64.0 in the suite
        if first != value:
            notes.append(f"{path}: {found[key][2]} = {value!r} is a v1 sweep range: sysbench takes {first}")
        return parsed

    table = {"rows": number("arrayheight", True), "cols": number("arraywidth", True)}
    dataflow = get("dataflow")[0].lower()
    if dataflow not in ("ws", "os", "is"):
        raise bad("dataflow", "must be ws, os or is")
    table["dataflow"] = dataflow
    for key, sram in (("ifmapsramszkb", "ifmap_sram_kb"), ("filtersramszkb", "filter_sram_kb"),
                      ("ofmapsramszkb", "ofmap_sram_kb")):
        table[sram] = number(key, False)
    table["word_bytes"] = 1  # SCALE-Sim's memory model has a fixed 1-byte word
    mode = get("interfacebandwidth")[0].upper()
    if mode not in ("USER", "CALC"):
        raise bad("interfacebandwidth", "must be USER or CALC")
    table["bandwidth_mode"] = "user" if mode == "USER" else "ideal"
    if mode == "USER":
        if "bandwidth" not in found:
            raise SuiteError([f"{path}: InterfaceBandwidth = USER needs [architecture_presets] Bandwidth "
                              "(SCALE-Sim has no default for it)"])
        table["dram_bw"] = number("bandwidth", False)
        if parser.has_section("layout"):
            # SCALE-Sim v3 (single_layer_sim.py) feeds ifmap and filter from DRAM at the
            # [layout] SRAM bank bandwidths, only ofmap at Bandwidth; v2 uses Bandwidth for all.
            table["ifmap_dram_bw"] = number("ifmapsrambankbandwidth", False)
            table["filter_dram_bw"] = number("filtersrambankbandwidth", False)
            notes.append(f"{path}: as SCALE-Sim v3, ifmap and filter DRAM bandwidths come from [layout] "
                         "IfmapSRAMBankBandwidth / FilterSRAMBankBandwidth, ofmap's from Bandwidth")
        notes.append(f"{path}: scalesim_compat left false: set it true in the array to reproduce SCALE-Sim "
                     "v3's memory-model defects")
    elif "bandwidth" in found:
        used.add("bandwidth")
        notes.append(f"{path}: Bandwidth = {found['bandwidth'][0]} not used: InterfaceBandwidth = CALC "
                     "(SCALE-Sim estimates the bandwidth a layer needs)")
    support = get("sparsitysupport")[0].lower()
    if support not in ("true", "false"):
        raise bad("sparsitysupport", "must be true or false")
    run_name = get("run_name")[0]
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", run_name).strip("_") or "scale_run"
    unmodelled += [f"{found[key][2]} = {found[key][0]}" for key in found if key not in used]
    if unmodelled:
        notes.append(f"{path}: not modelled by sysbench, ignored: {', '.join(unmodelled)}")
    if unknown:
        notes.append(f"{path}: not SCALE-Sim keys, ignored: {', '.join(unknown)}")
    return name, table, notes, support == "true"


def _display(key: str) -> str:
    """SCALE-Sim's spelling of a lower-cased key, for messages."""
    return {"run_name": "run_name", "arrayheight": "ArrayHeight", "arraywidth": "ArrayWidth",
            "ifmapsramszkb": "IfmapSramSzkB", "filtersramszkb": "FilterSramSzkB",
            "ofmapsramszkb": "OfmapSramSzkB", "dataflow": "Dataflow", "bandwidth": "Bandwidth",
            "interfacebandwidth": "InterfaceBandwidth", "sparsitysupport": "SparsitySupport",
            "ifmapsrambankbandwidth": "IfmapSRAMBankBandwidth",
            "filtersrambankbandwidth": "FilterSRAMBankBandwidth"}.get(key, key)


def _key_lines(text: str):
    """(line number, section, key as written) of every key line."""
    section = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1].strip()
        elif section and stripped and stripped[0] not in "#;":
            match = re.match(r"([^:=]+?)\s*[:=]", stripped)
            if match:
                yield lineno, section, match[1]


def _spelling(text: str, section: str, key: str) -> str:
    for _, sec, written in _key_lines(text):
        if sec == section and written.lower() == key:
            return written
    return key


def _line_of(text: str, section: str, written: str) -> int:
    lineno = 0
    for number, sec, key in _key_lines(text):
        if sec == section and key == written:
            lineno = number  # configparser (strict=False) keeps the last one
    return lineno
