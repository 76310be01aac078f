"""Dataset validation: great-expectations on the manifest plus a full decode of every file.

Two layers:
1. Table expectations (great-expectations, an ephemeral context built in code, pandas data source) on the
   manifest: unique pair ids, pairs and groups per split equal to the expected counts, 3-channel uint8,
   lq and gt of equal height/width, every sha256 present.
2. A per-pair check in worker processes: each file exists, its bytes still match the manifest's sha256,
   PNG chunks pass their CRC, 8 bits per channel, RGB (a grayscale, RGBA or 16-bit image fails), the
   whole image decodes (`load()`, so truncated files fail), lq/gt (and GoPro's blur_gamma) have the same
   shape, lq differs from gt; and across the manifest, no two pairs have the same bytes.

ImageNet has no lq; its real train set holds a few grayscale and CMYK JPEGs, which loaders convert to RGB,
so for ImageNet a non-RGB image is a warning, not a failure.

The report (`validate_dataset`'s return value, written by `write_report`) is JSON:
{"dataset", "success", "counts": {split: pairs}, "groups": {split: n}, "expected": {...},
 "failures": [{"file": path relative to raw_dir or null, "reason"}], "warnings": [...],
 "expectations": [{"name", "success"}], "files_checked", "images_per_second", "seconds",
 "manifest_sha256" (of the manifest validated, added by `validate_stage`)}.

Every stage that reads a dataset (prepare, degrade, finetune's store, evaluate's data) first calls
`require_valid`: no report, a failed one, or one made for another manifest stops it with one line naming
the report, so data that failed validation is never packed or scored.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from restorebench.errors import RestorebenchError
from restorebench.io import sha256_file, write_json

from .manifest import load_mat_blocks, read_image_bytes
from .parallel import parallel_list

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_LISTED = 20  # per expectation, rows turned into named failures


class ValidationFailed(RestorebenchError):
    """A dataset failed validation; the message names the first few failing files and reasons (a problem
    of the dataset as a whole, e.g. a count, is listed as "(dataset)"). `where`: the report file if given,
    else the dataset."""

    def __init__(
        self, report: dict[str, Any], limit: int = 5, *, report_path: str | Path | None = None
    ) -> None:
        self.report = report
        failures = report.get("failures", [])
        lines = [f"{f['file'] or '(dataset)'}: {f['reason']}" for f in failures[:limit]]
        more = f"; ... and {len(failures) - limit} more" if len(failures) > limit else ""
        super().__init__(
            report_path or report.get("dataset"),
            f"{report.get('dataset')} failed validation with {len(failures)} problem(s): "
            + "; ".join(lines)
            + more,
            "see the report for every problem; fetch the dataset again" if report_path else None,
        )


# ----------------------------------------------------------------------------------- per-file checks


def png_problem(data: bytes) -> str | None:
    """Why a PNG byte string is not an intact 8-bit RGB PNG (None if it is)."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        return "not a PNG (no IHDR header)"
    _, _, depth, colour = struct.unpack(">IIBB", data[16:26])
    pos, seen_end = 8, False
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        if end > len(data):
            return f"truncated: chunk {kind.decode('latin-1')!r} runs past the end of the file"
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(data[pos + 4 : end - 4]) != crc:
            return f"corrupted: PNG chunk {kind.decode('latin-1')!r} at byte {pos} fails its CRC"
        pos = end
        if kind == b"IEND":
            seen_end = True
            break
    if not seen_end:
        return "truncated: no IEND chunk"
    if depth != 8:
        return f"{depth}-bit PNG, expected 8 bits per channel"
    if colour != 2:
        kind = {
            0: "grayscale (1 channel)",
            3: "palette",
            4: "grayscale+alpha (2 channels)",
            6: "RGBA (4 channels)",
        }
        return f"{kind.get(colour, f'colour type {colour}')} PNG, expected 3-channel RGB"
    return None


def _decode(root: str, rel: str, sha: str, rgb_required: bool, offset: int = -1,
            size: int = -1) -> tuple[np.ndarray | None, list, list]:  # fmt: skip
    """Read (a file, or a tar member at offset: manifest.read_image_bytes), hash-check and fully decode one
    image; returns (HxWxC array or None, failures, warnings)."""
    from PIL import Image

    try:
        data = read_image_bytes(root, rel, offset, size)
    except FileNotFoundError:
        return None, [(rel, "missing file")], []
    except OSError as err:
        return None, [(rel, f"unreadable: {err}")], []
    if sha and _sha256(data) != sha:
        return (
            None,
            [(rel, "sha256 differs from the manifest (file changed after the manifest was built)")],
            [],
        )
    if data[:8] == PNG_SIGNATURE:
        problem = png_problem(data)
        if problem:
            return None, [(rel, problem)], []
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # decodes every pixel: a truncated file raises here
            mode = im.mode
            arr = np.asarray(im)
    except Exception as err:  # Pillow raises many types for broken files
        return None, [(rel, f"does not decode: {err}")], []
    if mode != "RGB":
        reason = (
            f"{mode} image ({arr.shape[2] if arr.ndim == 3 else 1} channel(s)), expected 3-channel 8-bit RGB"
        )
        if rgb_required:
            return None, [(rel, reason)], []
        return arr, [], [(rel, reason)]
    return arr, [], []


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_pair(task: tuple) -> tuple[list, list, int]:
    """Worker: (root, [(role, rel, sha)], rgb_required) -> (failures, warnings, files decoded).

    Roles: "lq", "gt", "alt"; an entry may add (offset, size) of a tar member. Shapes must agree; lq and alt
    must differ from gt.
    """
    root, files, rgb_required = task
    failures, warnings, arrays = [], [], {}
    for role, rel, sha, *where in files:
        arr, fail, warn = _decode(root, rel, sha, rgb_required, *where)
        failures += fail
        warnings += warn
        if arr is not None:
            arrays[role] = (rel, arr)
    if "gt" in arrays:
        gt_rel, gt = arrays["gt"]
        for role in ("lq", "alt"):
            if role not in arrays:
                continue
            rel, arr = arrays[role]
            if arr.shape != gt.shape:
                failures.append((rel, f"size mismatch: {arr.shape[0]}x{arr.shape[1]} vs gt {gt_rel} "
                                      f"{gt.shape[0]}x{gt.shape[1]}"))  # fmt: skip
            elif np.array_equal(arr, gt):
                failures.append((rel, f"identical to gt {gt_rel} (no degradation)"))
    return failures, warnings, len(arrays)


def _check_mats(df: pd.DataFrame, raw_dir: Path) -> tuple[list, int]:
    """SIDD validation blocks: both .mat arrays N x B x h x w x 3 uint8, same shape, blocks differ."""
    rows = df[df["mat_image"] >= 0]
    if rows.empty:
        return [], 0
    lq_rel, gt_rel = rows["lq_path"].iloc[0], rows["gt_path"].iloc[0]
    arrays, failures = {}, []
    for rel in (lq_rel, gt_rel):
        try:
            arr = load_mat_blocks(raw_dir / rel)
        except FileNotFoundError:
            failures.append((rel, "missing file"))
            continue
        except Exception as err:
            failures.append((rel, f"does not load: {err}"))
            continue
        if arr.dtype != np.uint8 or arr.ndim != 5 or arr.shape[-1] != 3:
            failures.append((rel, f"array {arr.shape} {arr.dtype}, expected N x B x h x w x 3 uint8"))
            continue
        arrays[rel] = arr
    if len(arrays) == 2:
        lq, gt = arrays[lq_rel], arrays[gt_rel]
        if lq.shape != gt.shape:
            failures.append((lq_rel, f"size mismatch: {lq.shape} vs gt {gt_rel} {gt.shape}"))
        else:
            same = np.all(
                lq.reshape(lq.shape[0], lq.shape[1], -1) == gt.reshape(gt.shape[0], gt.shape[1], -1), axis=2
            )
            for n, b in zip(*np.nonzero(same), strict=True):
                failures.append((lq_rel, f"block [{n}, {b}] identical to gt (no degradation)"))
    return failures, sum(a.shape[0] * a.shape[1] for a in arrays.values())


def _duplicates(df: pd.DataFrame) -> list:
    """Pairs whose (lq, gt) bytes equal an earlier pair's."""
    out = []
    hashed = df[df["sha256"] != ""]
    first: dict[tuple, str] = {}
    for row in hashed.itertuples():
        key = (row.lq_sha256 or "", row.sha256)
        if key in first:
            out.append((row.gt_path, f"duplicate pair {row.pair_id}: same bytes as pair {first[key]}"))
        else:
            first[key] = row.pair_id
    return out


# -------------------------------------------------------------------------------------- expectations


def _quiet_gx() -> Any:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    for name in ("great_expectations", "great_expectations.core", "great_expectations.data_context"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _expectations(dataset: str, df: pd.DataFrame, expected_pairs: dict[str, int],
                  expected_groups: dict[str, int]) -> tuple[list[dict], list[tuple[Any, str, str]]]:  # fmt: skip
    """Run the table expectations; returns ([{name, success}], [(row index or None, name, detail)])."""
    import great_expectations.expectations as gxe

    context = _quiet_gx()
    batches = context.data_sources.add_pandas("manifest").add_dataframe_asset("rows")
    whole = batches.add_batch_definition_whole_dataframe("all")
    files = df[df["mat_image"] < 0]
    has_lq = bool((files["lq_path"] != "").any())
    checks: list[tuple[str, pd.DataFrame, Any]] = [
        ("pair_id unique", df, gxe.ExpectColumnValuesToBeUnique(column="pair_id")),
        ("gt sha256 present", df, gxe.ExpectColumnValueLengthsToEqual(column="sha256", value=64)),
        ("gt dtype uint8", df, gxe.ExpectColumnValuesToBeInSet(column="dtype", value_set=["uint8"])),
        ("gt channels", df, gxe.ExpectColumnValuesToBeInSet(
            column="channels", value_set=[1, 3, 4] if dataset == "imagenet" else [3])),
    ]  # fmt: skip
    if has_lq:
        checks += [
            ("lq sha256 present", df, gxe.ExpectColumnValueLengthsToEqual(column="lq_sha256", value=64)),
            ("lq dtype uint8", df, gxe.ExpectColumnValuesToBeInSet(column="lq_dtype", value_set=["uint8"])),
            ("lq channels", df, gxe.ExpectColumnValuesToBeInSet(column="lq_channels", value_set=[3])),
            ("lq/gt height equal", df, gxe.ExpectColumnPairValuesToBeEqual(column_A="lq_height", column_B="height")),
            ("lq/gt width equal", df, gxe.ExpectColumnPairValuesToBeEqual(column_A="lq_width", column_B="width")),
        ]  # fmt: skip
    for split, n in sorted(expected_pairs.items()):
        sub = df[df["split"] == split]
        checks.append((f"{split}: {n} pairs", sub, gxe.ExpectTableRowCountToEqual(value=n)))
    for split, n in sorted(expected_groups.items()):
        sub = df[df["split"] == split]
        checks.append((f"{split}: {n} groups", sub,
                       gxe.ExpectColumnUniqueValueCountToBeBetween(column="group", min_value=n, max_value=n)))  # fmt: skip
    results, problems = [], []
    for name, frame, expectation in checks:
        label = f"{expectation.expectation_type}: {name}"
        try:
            batch = whole.get_batch(batch_parameters={"dataframe": frame.reset_index(drop=True)})
            res = batch.validate(expectation, result_format="COMPLETE")
            ok, detail = bool(res.success), res.result
        except Exception as err:  # an empty split, a missing column: report, do not crash
            ok, detail = False, {"error": str(err)}
        results.append({"name": label, "success": ok})
        if ok:
            continue
        index = detail.get("unexpected_index_list") or []
        if index:
            values = detail.get("unexpected_list") or [None] * len(index)
            for i, value in list(zip(index, values, strict=False))[:MAX_LISTED]:
                problems.append((frame.index[i], label, f"unexpected value {value!r}"))
        else:
            observed = detail.get("observed_value", detail.get("error"))
            problems.append((None, label, f"observed {observed!r}"))
    return results, problems


# ------------------------------------------------------------------------------------------- driver


def validate_dataset(dataset: str, manifest: pd.DataFrame, raw_dir: Path, *, expected_pairs: dict[str, int],
                     expected_groups: dict[str, int], workers: int = 0) -> dict[str, Any]:  # fmt: skip
    """Validate the files a manifest lists under `raw_dir`; returns the JSON-able report (module docstring).

    `expected_pairs` / `expected_groups`: split -> count (empty: counts reported, not checked).
    `workers`: decode processes, 0 = all cores. Never raises for bad data; `validate_stage` raises
    `ValidationFailed` (one line) when `report["success"]` is false.
    """
    raw_dir = Path(raw_dir)
    df = manifest.reset_index(drop=True)
    t0 = time.perf_counter()
    expectations, problems = _expectations(dataset, df, expected_pairs, expected_groups)

    t1 = time.perf_counter()
    files = df[df["mat_image"] < 0]
    rgb_required = dataset != "imagenet"
    tasks = []
    for row in files.itertuples():
        member = getattr(row, "offset", -1) >= 0  # an ImageNet JPEG inside its class tar
        entries = [("gt", row.gt_path, row.sha256, *((row.offset, row.bytes) if member else ()))]
        if row.lq_path:
            entries.append(("lq", row.lq_path, row.lq_sha256 or ""))
        if row.alt_path:
            entries.append(("alt", row.alt_path, ""))
        tasks.append((str(raw_dir), entries, rgb_required))
    failures: list[tuple[str | None, str]] = []
    warnings: list[tuple[str, str]] = []
    decoded = 0
    for fail, warn, n in parallel_list(check_pair, tasks, workers, desc=f"validate {dataset}", unit="pairs"):
        failures += fail
        warnings += warn
        decoded += n
    mat_failures, mat_blocks = _check_mats(df, raw_dir)
    failures += mat_failures
    decode_seconds = time.perf_counter() - t1

    failures += _duplicates(df)
    named = {f for f, _ in failures}
    for index, label, detail in problems:
        file = None if index is None else df.at[index, "gt_path"]
        lq = None if index is None else df.at[index, "lq_path"]
        if index is None or (file not in named and lq not in named):
            failures.append((file, f"{label}: {detail}"))
    report = {
        "dataset": dataset,
        "success": not failures and all(e["success"] for e in expectations),
        "counts": {str(k): int(v) for k, v in df.groupby("split").size().items()},
        "groups": {str(k): int(v) for k, v in df.groupby("split")["group"].nunique().items()},
        "expected": {"pairs": dict(expected_pairs), "groups": dict(expected_groups)},
        "failures": [{"file": f, "reason": r} for f, r in failures],
        "warnings": [{"file": f, "reason": r} for f, r in warnings],
        "expectations": expectations,
        "files_checked": decoded,
        "mat_blocks_checked": mat_blocks,
        "images_per_second": round(decoded / decode_seconds, 2) if decode_seconds > 0 else None,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return report


def write_report(report: dict[str, Any], path: Path) -> None:
    """Write the report as JSON, atomically."""
    write_json(path, report)


def validate_stage(dataset: str, *, root: Path, expected_pairs: dict[str, int], expected_groups: dict[str, int],
                   workers: int = 0) -> tuple[dict[str, Any], Path]:  # fmt: skip
    """The `validate` stage: check data/raw/{dataset} against its manifest, write
    data/validation/{dataset}.json, and fail (ValidationFailed, one line naming the first bad files)
    when the data is not valid. Returns (report, report path)."""
    from .manifest import read_manifest

    manifest_path = root / "manifests" / f"{dataset}.parquet"
    manifest = read_manifest(manifest_path, dataset=dataset)
    report = validate_dataset(dataset, manifest, root / "raw" / dataset, expected_pairs=expected_pairs,
                              expected_groups=expected_groups, workers=workers)  # fmt: skip
    report["manifest_sha256"] = sha256_file(manifest_path)  # what `require_valid` holds the report to
    out = root / "validation" / f"{dataset}.json"
    write_report(report, out)
    if not report["success"]:
        raise ValidationFailed(report, report_path=out)  # one line: the first bad files and reasons
    return report, out


class NotValidated(RestorebenchError):
    """A stage asked for a dataset whose validation report is missing, failed, or made for another manifest."""


def require_valid(root: Path, dataset: str, stage: str) -> Path:
    """Refuse (NotValidated, one line naming the report) unless root/validation/{dataset}.json says the
    dataset passed, for the manifest now at root/manifests/{dataset}.parquet. `stage` names the caller in
    the message. Returns the report's path."""
    path = Path(root) / "validation" / f"{dataset}.json"
    run = f"run `restorebench validate --dataset {dataset}` before {stage}"
    if not path.is_file():
        raise NotValidated(path, f"{dataset} has no validation report; {stage} reads only validated data", run)
    try:
        report = json.loads(path.read_text())
        success = report["success"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise NotValidated(path, f"unreadable validation report ({type(err).__name__})", run) from None
    if success is not True:
        failures = report.get("failures") or [{}]
        first = failures[0].get("file") or "(dataset)", failures[0].get("reason", "")
        raise NotValidated(path, f"{dataset} failed validation ({len(failures)} problem(s), first {first[0]}: "
                           f"{first[1]}); {stage} refuses it", f"fetch {dataset} again, then validate it")  # fmt: skip
    manifest = Path(root) / "manifests" / f"{dataset}.parquet"
    recorded = report.get("manifest_sha256")
    if recorded and manifest.is_file() and sha256_file(manifest) != recorded:
        raise NotValidated(path, f"made for another {manifest} (the dataset was fetched again since)", run)
    return path
