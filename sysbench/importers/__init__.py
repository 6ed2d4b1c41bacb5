"""Other tools' files in, a sysbench suite (TOML) out.

    .csv   a SCALE-Sim topology (conv or GEMM form), with its .cfg as `config`
    .onnx  an ONNX model (needs the extra sysbench[onnx])

The suite then loads like a hand-written one (suite.load_text): `sysbench run model.onnx`
is an import to a suite in memory followed by the normal run. Problems raise
suite.SuiteError with one line each, naming the file and line or node; `notes` say what was
defaulted, skipped or changed, one line each.
"""
from __future__ import annotations

from pathlib import Path

from .. import suite as suite_mod
from ..suite import SuiteError

FORMATS = {".csv": "SCALE-Sim topology", ".onnx": "ONNX model"}
# Arrays for an import without a .cfg: those of the bundled resnet50 suite.
DEFAULT_ARRAYS = {"a32": {"rows": 32, "cols": 32, "dataflow": "ws"},
                  "a128": {"rows": 128, "cols": 128, "dataflow": "ws"}}


def handles(spec) -> bool:
    """True for a file this package imports (by suffix)."""
    return Path(str(spec)).suffix.lower() in FORMATS


def build_suite(path, config=None, batch: int = 1, array: str | None = None,
                numerics: bool = False) -> tuple[dict, list[str]]:
    """(suite as a dict, notes) for the file at `path`."""
    from . import onnx as onnx_import, scalesim

    path = Path(path)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise SuiteError([f"--batch {batch}: must be a positive integer"])
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise SuiteError([f"{path}: cannot import: not a SCALE-Sim topology (.csv) or an ONNX model (.onnx)"])
    if not path.is_file():
        raise SuiteError([f"{path}: no such file"])

    notes, sparsity = [], False
    if config is not None:
        config = Path(config)
        if not config.is_file():
            raise SuiteError([f"{config}: no such file"])
        name, table, cfg_notes, sparsity = scalesim.read_config(config)
        arrays = {array or name: table}
        notes += cfg_notes
    elif array is None:
        arrays = dict(DEFAULT_ARRAYS)
    elif array in DEFAULT_ARRAYS:
        arrays = {array: DEFAULT_ARRAYS[array]}
    else:
        raise SuiteError([f"--array {array}: not one of {', '.join(DEFAULT_ARRAYS)} "
                          "(give --config FILE.cfg for an array of your own)"])

    skipped = ""
    if suffix == ".csv":
        cases, layer_notes, form = scalesim.read_topology(path, sparsity, batch)
        what = f"SCALE-Sim {form} topology {path.name}"
    else:
        cases, layer_notes, counts = onnx_import.read_model(path, batch)
        what = f"ONNX model {path.name} at batch {batch}"
        if counts:
            skipped = f"; skipped {sum(counts.values())} op(s): {onnx_import.summary(counts)}"
    notes += layer_notes
    description = f"imported from {what}: {len(cases)} layers" + \
        (f" on the array of {config.name}" if config else "") + skipped
    names = list(arrays)
    data = {"name": path.stem, "description": description,
            "defaults": {"numerics": numerics, "array": names if len(names) > 1 else names[0]},
            "arrays": arrays, "cases": cases}
    return data, notes


def load_suite_source(path, config=None, batch: int = 1, array: str | None = None,
                      numerics: bool = False) -> tuple[str, list[str]]:
    """(suite TOML text, notes) for the file at `path`."""
    data, notes = build_suite(path, config, batch, array, numerics)
    import tomli_w  # only an import writes TOML

    return tomli_w.dumps(data), notes


def load(spec, config=None, batch: int = 1, array: str | None = None,
         numerics: bool = False) -> tuple[suite_mod.Suite, list[str]]:
    """Import `spec` and validate the suite as suite.load does a TOML file: (suite, notes)."""
    text, notes = load_suite_source(spec, config, batch, array, numerics)
    return validate(text, spec), notes


def validate(text: str, source) -> suite_mod.Suite:
    """The imported suite `text` loaded as any suite is (every case checked)."""
    path = Path(source)
    return suite_mod.load_text(text, path, f"{path} (imported)")
