"""`edgekws bundle RUN --name N --version V --key KEY --out FILE`: a signed bundle from a training run.

One pass, in stages: load the run (``best.npz`` + ``run.json``), quantize to Loihi 2 fixed point, write
``model/float.npz``, ``model/netx.h5``, ``model/model.onnx`` (the streaming ONNX model, which serves whole
sequences too) and ``model/model.nir``, optionally evaluate the float model (JAX), the fixed-point
emulator and ONNX Runtime on a held-out set, then assemble the manifest and sign it. Every model file is
produced in memory with deterministic bytes, so two builds of the same run with the same ``created`` are
byte-identical. See docs/bundle.md, "Building a bundle from a training run".
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np

from edgekws.agent.backends import backend_classes
from edgekws.packaging import (
    NAME_PATTERN,
    DetectionSpec,
    FixedPointNetwork,
    KeyFileError,
    Lineage,
    ManifestError,
    Metrics,
    NetworkSpec,
    SemVer,
    SigningKey,
    artifact_path,
    build_bundle,
    check_bundle,
    load_private_key,
    parse_created,
    write_netx,
)
from edgekws.toolkit.data import SpikeDataset
from edgekws.toolkit.quant import DEFAULT_PERCENTILE

QUANT_TYPE = "edgekws.quantization"
QUANT_FORMAT_VERSION = 1
EXTERNAL_INPUT_TYPE = "edgekws.spike_input"  # front-end of runs trained on spikes made elsewhere (SHD)
FIXED_POINT_REFERENCE = "emulator"  # the backend whose accuracy is the manifest's fixed_point metric
CLIP_WARN_FRACTION = 0.01  # warn when a layer clips more than this fraction of its weights
AGREEMENT_WARN = 0.95  # warn when fixed-point and float decisions agree on fewer samples than this
EVAL_CHUNK = 64  # samples binned and run at a time

Progress = Callable[[int, int], None]


class BundleBuildError(ValueError):
    """A bundle cannot be built from a run; the message lists every problem and its fix."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("cannot build the bundle:\n  - " + "\n  - ".join(self.problems))


@dataclass(frozen=True)
class BundleBuild:
    """What a build produced: the bundle file, its signer, per-file sizes, metrics and warnings."""

    path: Path
    size: int
    sha256: str
    key_id: str
    files: dict[str, int]  # bundle path -> size in bytes
    manifest: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "path": str(self.path),
            "size": self.size,
            "sha256": self.sha256,
            "key_id": self.key_id,
            "name": m["name"],
            "version": m["version"],
            "created": m["created"],
            "files": dict(self.files),
            "lineage": m["lineage"],
            "metrics": m["metrics"],
            "backends": m["backends"],
            "warnings": list(self.warnings),
        }


# ------------------------------------------------------------------------------------------------ inputs


def _check_inputs(
    run_dir: Path,
    name: str,
    version: str,
    key_path: Path,
    out: str | os.PathLike[str],
    parent: str | None,
    created: str | None,
    eval_data: str | os.PathLike[str] | SpikeDataset | None,
    force: bool,
) -> SigningKey:
    """The signing key, once every argument has been checked; else one error listing every problem."""
    problems: list[str] = []
    if not (run_dir / "run.json").is_file():
        problems.append(
            f"{run_dir}: no run.json; is this a training run folder (edgekws train ... --out RUN)?"
        )
    elif not (run_dir / "best.npz").is_file():
        problems.append(
            f"{run_dir}/best.npz is missing: the run has no selected checkpoint yet; train at least one "
            f"epoch (edgekws train ... --out {run_dir} --resume)"
        )
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        problems.append(
            f"--name must be 1-64 lowercase letters, digits, '.', '_' or '-' (starting with a letter or "
            f"digit), got {name!r}"
        )
    try:
        semver = SemVer.parse(version)
    except ValueError as exc:
        problems.append(f"--version: {exc}")
        semver = None
    if parent is not None:
        try:
            if semver is not None and not SemVer.parse(parent) < semver:
                problems.append(f"--parent {parent} must be lower than --version {version}; bump the version")
        except ValueError as exc:
            problems.append(f"--parent: {exc}")
    if created is not None:
        try:
            parse_created(created)
        except ValueError as exc:
            problems.append(f"--created: {exc}")
    key: SigningKey | None = None
    try:
        if key_path.is_file() and key_path.read_bytes().lstrip().startswith(b"-----BEGIN PUBLIC KEY"):
            raise KeyFileError(
                f"{key_path} is a public key, not an Ed25519 private key; sign with the private NAME.key "
                "that `edgekws keys generate` wrote next to it"
            )
        key = load_private_key(key_path)
    except KeyFileError as exc:
        problems.append(f"--key: {exc}")
    except OSError as exc:
        problems.append(f"--key: cannot read {key_path}: {exc.strerror}")
    if eval_data is not None and not isinstance(eval_data, SpikeDataset) and not Path(eval_data).is_file():
        problems.append(f"--eval-data {eval_data}: no such file (an HDF5 spike file, e.g. data/test.h5)")
    if isinstance(name, str) and NAME_PATTERN.fullmatch(name):
        try:
            dest = artifact_path(out, f"{name}-{version}.ekb", create=False)
        except ValueError as exc:
            problems.append(str(exc))
        else:
            if (dest.exists() or dest.is_symlink()) and not force:
                problems.append(
                    f"{dest} already exists; bundles are immutable: bump --version or pass --force"
                )
    if problems or key is None:
        raise BundleBuildError(problems)
    return key


def _frontend(info: dict[str, Any], spec: NetworkSpec, warnings: list[str]) -> dict[str, Any]:
    """The run's front-end spec, or a tagged stand-in for data made elsewhere (which the agent refuses)."""
    frontend = info.get("frontend")
    if isinstance(frontend, dict) and isinstance(frontend.get("type"), str):
        channels = frontend.get("num_channels")
        if isinstance(channels, int) and channels != spec.num_inputs:
            raise BundleBuildError(
                [
                    f"run.json: the front-end makes {channels} channels but the network takes "
                    f"{spec.num_inputs}; the run's data were not made by this front-end"
                ]
            )
        return dict(frontend)
    warnings.append(
        "the run's data carry no front-end spec (spikes made elsewhere, e.g. SHD): the manifest records "
        f"'{EXTERNAL_INPUT_TYPE}' and the agent cannot feed this model from audio"
    )
    return {
        "type": EXTERNAL_INPUT_TYPE,
        "format_version": 1,
        "num_channels": spec.num_inputs,
        "dt_ms": spec.dt_ms,
    }


def _run_metrics(run_dir: Path, info: dict[str, Any]) -> dict[str, float]:
    """Train/validation accuracy of the selected epoch, from metrics.jsonl."""
    from edgekws.toolkit.train import read_metrics

    best = int(info.get("selection", {}).get("best_epoch") or 0)
    out: dict[str, float] = {}
    for record in read_metrics(run_dir):
        if record.get("epoch") == best:
            out["best_epoch"] = best
            for key in ("train_accuracy", "val_accuracy"):
                if isinstance(record.get(key), (int, float)):
                    out[key] = float(record[key])
    return out


# ------------------------------------------------------------------------------------------------ files


def float_npz_bytes(params: dict[str, np.ndarray]) -> bytes:
    """``np.savez`` of the float parameters (float32, sorted names): the same bytes for the same params."""
    buffer = io.BytesIO()
    arrays: dict[str, Any] = {k: np.asarray(params[k], np.float32) for k in sorted(params)}
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def netx_bytes(net: FixedPointNetwork) -> bytes:
    """The NetX HDF5 file of ``net`` as bytes (h5py writes no timestamps, so the bytes are stable)."""
    with tempfile.TemporaryDirectory(prefix="edgekws-netx-") as tmp:
        return write_netx(net, Path(tmp) / "netx.h5").read_bytes()


def quantization_spec(net: FixedPointNetwork, report: Any, nir_semantics: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``quantization`` object: settings, per-layer scales and errors, NIR semantics."""
    layers = []
    for fixed, rep in zip(net.to_dict()["layers"], report.layers, strict=True):
        entry = {k: v for k, v in asdict(rep).items() if k != "step"}  # step == weight_scale
        layers.append({**entry, **fixed})
    return {
        "type": QUANT_TYPE,
        "format_version": QUANT_FORMAT_VERSION,
        "method": "per-layer power-of-two step from a percentile of the weight magnitudes (toolkit/quant)",
        "percentile": float(report.percentile),
        "num_bits": int(report.num_bits),
        "state_scale": "fixed-point u and v = float u and v * 64 / weight_scale (per layer)",
        "fixed_point_type": FixedPointNetwork.TYPE,
        "layers": layers,
        "clipped_weights": sum(int(rep.num_clipped) for rep in report.layers),
        "nir_semantics": nir_semantics,
    }


# ------------------------------------------------------------------------------------------------ metrics


def _check_eval_data(data: SpikeDataset, spec: NetworkSpec, labels: tuple[str, ...]) -> None:
    problems = []
    if data.num_channels != spec.num_inputs:
        problems.append(
            f"--eval-data has {data.num_channels} channels but the network takes {spec.num_inputs}; "
            "encode it with the run's front-end"
        )
    if data.num_classes != spec.num_outputs:
        problems.append(f"--eval-data has {data.num_classes} classes but the network {spec.num_outputs}")
    elif list(data.class_names) != list(labels):
        problems.append(
            f"--eval-data classes {list(data.class_names)} differ from the run's {list(labels)} "
            "(names or order)"
        )
    if len(data) == 0:
        problems.append("--eval-data is empty")
    if problems:
        raise BundleBuildError(problems)


def evaluated_backends(files: dict[str, bytes]) -> list[str]:
    """The agent's backends a build evaluates: those whose model file the bundle holds and that run in this
    interpreter (the emulator and ONNX Runtime on a workstation; Lava only in its own interpreter)."""
    return [n for n, cls in backend_classes().items() if cls.model_file in files and cls.available()]


def evaluate_backends(
    params: dict[str, np.ndarray],
    spec: NetworkSpec,
    files: dict[str, bytes],
    data: SpikeDataset,
    progress: Progress | None = None,
) -> dict[str, np.ndarray]:
    """Predicted labels on ``data`` of the float model (JAX) and of every backend in
    :func:`evaluated_backends`, each opening the bundle's own model files as the device does."""
    from edgekws.agent import decide
    from edgekws.toolkit.quant import deployed
    from edgekws.toolkit.train import float_readout

    with deployed(files) as open_backend:
        runners: dict[str, Callable[[np.ndarray], np.ndarray]] = {
            "float": lambda x: float_readout(params, spec, x, batch_size=EVAL_CHUNK),
            **{name: open_backend(name) for name in evaluated_backends(files)},
        }
        labels: dict[str, list[np.ndarray]] = {k: [] for k in runners}
        starts = list(range(0, len(data), EVAL_CHUNK))
        for done, start in enumerate(starts):
            spikes = data.bin(
                spec.dt_ms / 1000.0, spec.num_steps, np.arange(start, min(len(data), start + EVAL_CHUNK))
            )
            for backend, run in runners.items():
                labels[backend].append(decide(run(spikes), spec.readout).labels)
            if progress is not None:
                progress(done + 1, len(starts))
    return {k: np.concatenate(v) for k, v in labels.items()}


def _eval_metrics(
    predicted: dict[str, np.ndarray], truth: np.ndarray
) -> tuple[dict[str, float], dict[str, float], dict[str, dict[str, float]]]:
    """(float, fixed_point, backends) metric groups from predicted labels; ``fixed_point`` is the
    emulator's, the reference runtime of the fixed-point model."""
    ref = predicted["float"]

    def of(backend: str) -> dict[str, float]:
        p = predicted[backend]
        return {
            "eval_accuracy": float(np.mean(p == truth)),
            "eval_agreement_with_float": float(np.mean(p == ref)),
        }

    floats = {"eval_accuracy": float(np.mean(ref == truth)), "eval_samples": len(truth)}
    backends = {name: of(name) for name in predicted if name != "float"}
    return floats, backends[FIXED_POINT_REFERENCE], backends


# ------------------------------------------------------------------------------------------------ build


class _Stages:
    """Progress over the build's stages: ``progress(done, total)`` after each one."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(self.done, self.total)


def build_run_bundle(
    run_dir: str | os.PathLike[str],
    name: str,
    version: str,
    key_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    percentile: float = DEFAULT_PERCENTILE,
    eval_data: str | os.PathLike[str] | SpikeDataset | None = None,
    tune_data: str | os.PathLike[str] | SpikeDataset | None = None,
    parent: str | None = None,
    created: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
    allow_unfinished: bool = False,
) -> BundleBuild:
    """Quantize, export, evaluate (with ``eval_data``), pack and sign a run; see the module docstring.

    ``out`` is the bundle file, or a folder (ending in ``/`` or existing; created if missing) for
    ``NAME-VERSION.ekb`` (:func:`edgekws.packaging.artifact_path`). ``progress(done, total)`` is called after
    every stage. A run trained on stretches (an always-on model) gets the decision settings that come closest
    to MLPerf Tiny's mark on ``tune_data`` (stretches; default: the run's own validation stretches) as the
    fixed-point emulator runs them, and its ``eval_data`` (stretches) is scored by detection (recall, false
    accepts per hour, latency) rather than by clip accuracy. A run whose training was interrupted (or is still
    running) is refused unless ``allow_unfinished``, and then packed with a warning.
    """
    run_dir, key_file = Path(run_dir), Path(key_path)
    key = _check_inputs(run_dir, name, version, key_file, out, parent, created, eval_data, force)
    warnings: list[str] = []
    run, data = _load(run_dir, eval_data)
    spec, info, params = run.spec, run.info, run.params
    status = info.get("status")
    if status in ("interrupted", "running"):
        done = f"{info.get('epochs_done', '?')} of {info.get('config', {}).get('epochs', '?')} epochs"
        why = f"{run_dir}: training is {status} ({done})"
        if not allow_unfinished:
            raise BundleBuildError(
                [f"{why}; finish it with `edgekws train ... --resume`, or pass --allow-unfinished"]
            )
        warnings.append(f"{why}: packed because --allow-unfinished was given")
    labels = tuple(spec.class_names or info.get("class_names") or ())
    always_on = info.get("detection_mode") == "always_on"
    if data is not None and not always_on:
        _check_eval_data(data, spec, labels)
    try:  # a read-only, full or missing output (or temporary) folder: nothing is left behind
        chunks = 0 if data is None or always_on else -(-len(data) // EVAL_CHUNK)
        stages = _Stages(progress, 7 + chunks + (2 if always_on else 0))
        frontend = _frontend(info, spec, warnings)
        stages.advance()
        net, report = _quantized(params, spec, percentile, warnings)
        stages.advance()
        files, nir_semantics = _model_files(params, spec, net, stages)
        if always_on:
            detection, metrics = _stream_metrics(run_dir, run, files, tune_data, data, stages, warnings)
        else:
            detection = DetectionSpec(mode="lanes")
            metrics = _metrics(run_dir, info, report, params, spec, files, data, stages, warnings)
        try:
            dest = artifact_path(out, f"{name}-{version}.ekb")
        except ValueError as exc:
            raise BundleBuildError([str(exc)]) from exc
        try:
            path = build_bundle(
                dest,
                name=name,
                version=version,
                labels=labels,
                frontend=frontend,
                network=spec.to_dict(),
                files=files,
                private_key=key,
                quantization=quantization_spec(net, report, nir_semantics),
                metrics=metrics,
                backends=[n for n, cls in backend_classes().items() if cls.model_file in files],
                lineage=_lineage(run_dir, info, parent),
                created=created,
                detection=detection.to_dict(),
            )
        except ManifestError as exc:
            raise BundleBuildError(list(exc.problems)) from exc
    except OSError as exc:
        reason = exc.strerror or str(exc).splitlines()[0][:200]
        raise BundleBuildError(
            [
                f"cannot write the bundle {out}: {reason}; choose a writable --out with free space (the "
                f"temporary folder {tempfile.gettempdir()} needs room too)"
            ]
        ) from exc
    stages.advance()
    return _summary(path, key, warnings)


def _load(
    run_dir: Path, eval_data: str | os.PathLike[str] | SpikeDataset | None
) -> tuple[Any, SpikeDataset | None]:
    """The run (spec, parameters, run.json) and the evaluation set, if any."""
    from edgekws.toolkit.data import read_shd
    from edgekws.toolkit.train import EvalError, load_run

    try:
        run = load_run(run_dir)
    except (EvalError, ValueError) as exc:
        raise BundleBuildError([f"{run_dir}: {exc}"]) from exc
    if eval_data is None or isinstance(eval_data, SpikeDataset):
        return run, eval_data
    try:
        return run, read_shd(eval_data)
    except (OSError, ValueError) as exc:
        raise BundleBuildError([f"--eval-data {eval_data}: {exc}"]) from exc


def _quantized(
    params: dict[str, np.ndarray], spec: NetworkSpec, percentile: float, warnings: list[str]
) -> tuple[FixedPointNetwork, Any]:
    """The fixed-point network and its quantization report; a warning for each layer that clips much."""
    from edgekws.toolkit.quant import QuantizationError, quantize

    try:
        net, report = quantize(params, spec, percentile=percentile)
    except QuantizationError as exc:
        raise BundleBuildError([str(exc)]) from exc
    for layer in report.layers:
        fraction = layer.num_clipped / max(1, layer.num_weights)
        if fraction > CLIP_WARN_FRACTION:
            warnings.append(
                f"quantization clipped {layer.num_clipped} of {layer.num_weights} weights "
                f"({100 * fraction:.1f} %) of {layer.name} at percentile {percentile:g}; "
                "raise --percentile to clip fewer (at the cost of resolution)"
            )
    return net, report


def _model_files(
    params: dict[str, np.ndarray], spec: NetworkSpec, net: FixedPointNetwork, stages: _Stages
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """``model/float.npz``, ``netx.h5``, ``model.onnx`` (streaming) and ``model.nir``, and NIR's semantics."""
    from edgekws.toolkit.export import export_onnx_streaming

    files: dict[str, bytes] = {"model/float.npz": float_npz_bytes(params)}
    stages.advance()
    files["model/netx.h5"] = netx_bytes(net)
    stages.advance()
    files["model/model.onnx"] = export_onnx_streaming(params, spec)
    stages.advance()
    files["model/model.nir"], nir_semantics = bundle_nir(params, spec)
    stages.advance()
    return files, nir_semantics


def bundle_nir(params: dict[str, np.ndarray], spec: NetworkSpec) -> tuple[bytes, dict[str, Any]]:
    """``model/model.nir`` as bundles ship it, and its semantics: the readout as a never-firing CubaLIF,
    which third-party importers (Norse, Spyx) run, where they drop a CubaLI (docs/exports.md)."""
    from edgekws.toolkit.export import export_nir

    return export_nir(params, spec, readout="cuba_lif")


def _metrics(
    run_dir: Path,
    info: dict[str, Any],
    report: Any,
    params: dict[str, np.ndarray],
    spec: NetworkSpec,
    files: dict[str, bytes],
    data: SpikeDataset | None,
    stages: _Stages,
    warnings: list[str],
) -> Metrics:
    """The run's own metrics, the quantization's, and with ``data`` every evaluated backend's."""
    float_metrics: dict[str, float] = _run_metrics(run_dir, info)
    fixed_metrics: dict[str, float] = {
        "clipped_weights": sum(layer.num_clipped for layer in report.layers),
        "max_relative_weight_error": max(layer.relative_error for layer in report.layers),
    }
    backend_metrics: dict[str, dict[str, float]] = {}
    if data is not None:
        base = stages.done

        def eval_progress(chunks_done: int, _: int) -> None:
            stages.done = base + chunks_done - 1
            stages.advance()

        predicted = evaluate_backends(params, spec, files, data, eval_progress)
        stages.done = base + -(-len(data) // EVAL_CHUNK)
        f, q, backend_metrics = _eval_metrics(predicted, data.labels)
        float_metrics.update(f)
        fixed_metrics.update(q)
        if q["eval_agreement_with_float"] < AGREEMENT_WARN:
            warnings.append(
                f"the fixed-point model decides like the float model on only "
                f"{100 * q['eval_agreement_with_float']:.1f} % of --eval-data; check the quantization report"
            )
    return Metrics(float=float_metrics, fixed_point=fixed_metrics, backends=backend_metrics)


def _stretch_set(source: str | os.PathLike[str] | SpikeDataset | None, what: str) -> SpikeDataset | None:
    """A data set of stretches (from a path), or None; a BundleBuildError for clips or unreadable files."""
    from edgekws.toolkit.data import is_stream_set, read_shd

    if source is None:
        return None
    try:
        data = source if isinstance(source, SpikeDataset) else read_shd(source)
    except (OSError, ValueError) as exc:
        raise BundleBuildError([f"{what} {source}: {exc}"]) from exc
    if not is_stream_set(data):
        problem = f"{what}: an always-on model is scored on stretches (`edgekws data stretches`), not clips"
        raise BundleBuildError([problem])
    return data


def _stream_metrics(
    run_dir: Path,
    run: Any,
    files: dict[str, bytes],
    tune_data: str | os.PathLike[str] | SpikeDataset | None,
    eval_data: SpikeDataset | None,
    stages: _Stages,
    warnings: list[str],
) -> tuple[DetectionSpec, Metrics]:
    """An always-on model's decision settings, tuned on stretches as the fixed-point emulator runs them, and
    its detection metrics there (``tune_*``) and on ``eval_data`` (``eval_*``) for every evaluated backend."""
    from edgekws.toolkit.quant import deployed
    from edgekws.toolkit.train import (
        VALIDATION_DECISION,
        float_readout,
        readout_traces,
        score_stretches,
        spans_of,
        tune_detection,
    )

    spec, params, info = run.spec, run.params, run.info
    default_val = info.get("data", {}).get("val", {}).get("path")
    if tune_data is None and default_val is not None and not Path(default_val).is_file():
        warnings.append(f"the run's validation stretches {default_val} are gone; pass --tune-data")
        default_val = None
    tune = _stretch_set(tune_data if tune_data is not None else default_val, "--tune-data")
    evaluation = _stretch_set(eval_data, "--eval-data")
    labels = list(spec.class_names)

    def metrics_of(traces: list[np.ndarray], data: SpikeDataset, rule: DetectionSpec) -> dict[str, float]:
        s = score_stretches(traces, spans_of(data), rule, labels, spec.dt_ms)
        p50 = s.latency_percentile_s(50)
        out = {"recall": s.recall, "false_accepts_per_hour": s.false_accepts_per_hour, "keywords": s.keywords}
        return {**out, **({"latency_ms_p50": 1e3 * p50} if p50 is not None else {})}

    float_metrics: dict[str, float] = _run_metrics(run_dir, info)
    fixed_metrics: dict[str, float] = {}
    backend_metrics: dict[str, dict[str, float]] = {}
    with deployed(files) as open_backend:
        emulator = open_backend(FIXED_POINT_REFERENCE)
        detection = VALIDATION_DECISION
        if tune is None:
            warnings.append(
                "no validation stretches to tune the decision settings on (the run has no val set of "
                "stretches and no --tune-data was given): the manifest carries the untuned defaults"
            )
        else:
            traces = readout_traces(emulator, tune, spec)
            seconds = round(sum(t.shape[0] for t in traces) * spec.dt_ms / 1000.0)
            source = info.get("data", {}).get("val", {}).get("path") if tune_data is None else str(tune_data)
            detection, _ = tune_detection(traces, spans_of(tune), labels, spec.dt_ms)
            detection = dataclasses.replace(
                detection, tuned_on=f"{len(tune)} stretches ({seconds} s) of {source}, fixed-point emulator"
            )
            fixed_metrics.update({f"tune_{k}": v for k, v in metrics_of(traces, tune, detection).items()})
        stages.advance()
        if evaluation is not None:
            runners: dict[str, Callable[[np.ndarray], np.ndarray]] = {
                "float": lambda x: float_readout(params, spec, x, batch_size=len(x)),
                **{n: open_backend(n) for n in evaluated_backends(files)},
            }
            for backend, run_fn in runners.items():
                values = metrics_of(readout_traces(run_fn, evaluation, spec), evaluation, detection)
                named = {f"eval_{k}": v for k, v in values.items()}
                if backend == "float":
                    float_metrics.update(named)
                else:
                    backend_metrics[backend] = named
                    if backend == FIXED_POINT_REFERENCE:
                        fixed_metrics.update(named)
        stages.advance()
    return detection, Metrics(float=float_metrics, fixed_point=fixed_metrics, backends=backend_metrics)


def _lineage(run_dir: Path, info: dict[str, Any], parent: str | None) -> Lineage:
    """Parent version, the training run (sha256 of run.json) and its training data's fingerprint."""
    run_json = (run_dir / "run.json").read_bytes()
    train_sha = info.get("data", {}).get("train", {}).get("sha256")
    return Lineage(
        parent_version=parent,
        training_run_id="sha256:" + hashlib.sha256(run_json).hexdigest(),
        dataset_fingerprint=f"sha256:{train_sha}" if isinstance(train_sha, str) else None,
    )


def _summary(path: Path, key: SigningKey, warnings: list[str]) -> BundleBuild:
    """What the build wrote, read back from the bundle file."""
    checked = check_bundle(path)
    if checked.manifest is None:  # cannot happen for a bundle build_bundle just wrote
        raise RuntimeError(f"{path}: the bundle just written has no readable manifest: {checked.problems}")
    return BundleBuild(
        path=path,
        size=checked.size,
        sha256=checked.sha256,
        key_id=key.key_id,
        files={p: e.size for p, e in sorted(checked.manifest.files.items())},
        manifest=checked.manifest.to_dict(),
        warnings=warnings,
    )


# ------------------------------------------------------------------------------------------------ CLI


def _print_summary(result: BundleBuild) -> None:
    m = result.manifest
    click.echo(f"wrote {result.path}  {result.size} bytes  sha256 {result.sha256[:16]}…")
    click.echo(f"  {m['name']} {m['version']}  created {m['created']}  signed by key {result.key_id}")
    lin = m["lineage"]
    click.echo(
        f"  lineage: parent {lin['parent_version'] or '-'}, run {lin['training_run_id'][:23]}…, "
        f"data {(lin['dataset_fingerprint'] or '-')[:23]}"
    )
    for path, size in result.files.items():
        click.echo(f"  {path:<20} {size:>10} bytes")
    metrics = m["metrics"]
    for group in ("float", "fixed_point"):
        if metrics[group]:
            click.echo(f"  {group}: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics[group].items())))
    for backend, values in sorted(metrics["backends"].items()):
        click.echo(f"  {backend}: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(values.items())))
    click.echo(f"  backends: {', '.join(m['backends'])}")
    for warning in result.warnings:
        click.echo(f"  warning: {warning}")


@click.command("build")
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Model name ([a-z0-9][a-z0-9._-]*), e.g. kws-digits.")
@click.option("--version", "version", required=True, help="Semantic version of this bundle, e.g. 1.2.0.")
@click.option("--key", "key", required=True, type=click.Path(path_type=Path),
              help="Private signing key (from `edgekws keys generate`, mode 0600).")  # fmt: skip
@click.option("--out", "out", required=True, type=click.Path(),
              help="Bundle file to write, or a folder (ending in / or existing; created if missing) "
                   "for NAME-VERSION.ekb.")  # fmt: skip
@click.option("--percentile", default=DEFAULT_PERCENTILE, show_default=True, type=float,
              help="Weight-magnitude percentile that sets each layer's fixed-point step.")  # fmt: skip
@click.option("--eval-data", "eval_data", type=click.Path(path_type=Path), default=None,
              help="HDF5 spike file to evaluate the float, emulator and ONNX models on.")  # fmt: skip
@click.option("--tune-data", "tune_data", type=click.Path(path_type=Path), default=None,
              help="Always-on models: stretches to set the decision settings on [default: the run's "
              "validation stretches].")  # fmt: skip
@click.option("--parent", default=None, help="The version this bundle replaces (lineage).")
@click.option("--created", default=None,
              help="UTC YYYY-MM-DDTHH:MM:SSZ (default: now); fix it for byte-stable builds.")  # fmt: skip
@click.option("--force", is_flag=True, help="Overwrite an existing bundle file.")
@click.option(
    "--allow-unfinished",
    is_flag=True,
    help="Pack a run whose training was interrupted (refused by default; run.json says its status).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def build(
    run_dir: Path,
    name: str,
    version: str,
    key: Path,
    out: str,
    percentile: float,
    eval_data: Path | None,
    tune_data: Path | None,
    parent: str | None,
    created: str | None,
    force: bool,
    allow_unfinished: bool,
    as_json: bool,
) -> None:
    """Quantize, export, pack and sign a training run as a bundle (also `edgekws bundle RUN ...`).

    Writes model/float.npz, model/netx.h5 (8-bit fixed point), model/model.onnx (streaming) and
    model/model.nir with a signed manifest; prints every file's size, the key id and the metrics.

    Example:

    \b
        edgekws bundle runs/digits --name kws-digits --version 1.0.0 \\
            --key keys/release.key --out dist/ --eval-data data/digits/test.h5   # dist/kws-digits-1.0.0.ekb
    """
    from edgekws.toolkit._progress import progress_bar

    try:
        with progress_bar("bundle", disable=as_json) as update:
            result = build_run_bundle(
                run_dir,
                name,
                version,
                key,
                out,
                percentile=percentile,
                eval_data=eval_data,
                tune_data=tune_data,
                parent=parent,
                created=created,
                force=force,
                progress=update,
                allow_unfinished=allow_unfinished,
            )
    except BundleBuildError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    else:
        _print_summary(result)
